"""Synthetic MVK-like collections: textured shapes moving (occluding, leaving, re-entering) over a
textured background, with the ground-truth object mask of every frame. Seeded and fast; used by tests,
demos and the segmentation metrics.

Rendering is vectorised over frames and pixels (one numpy expression per object). Each object has its
own flat colour from a warm palette (far from the blue-green water) modulated by its own texture, so a
colour-statistics feature alone tells the objects apart. Object ``k`` (ids 1..K) is drawn above every
object with a smaller id, so the masks follow that fixed depth order; object 1 swings out of the frame
and back in, and the others cross its path, so occlusion, leaving and re-entering all happen.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from search.errors import InputError

SYNTH_SITES = ("Oahu_Jul2022", "PhuQuoc1_Jun2022", "Tulamben2_Jun2022", "Lembeh_Jul2013", "Okinawa_Feb2020",
               "Sipadan_Jan2015")

# Saturated warm / bright colours, mutually far apart and far from the blue-green background.
PALETTE = (
    (235, 50, 40),     # red
    (250, 215, 30),    # yellow
    (215, 60, 215),    # magenta
    (250, 140, 20),    # orange
    (245, 245, 245),   # white
    (120, 50, 210),    # violet
    (150, 240, 40),    # lime
    (120, 70, 30),     # brown
)
COLOUR_NAMES = dict(zip(PALETTE, ("red", "yellow", "magenta", "orange", "white", "violet", "lime", "brown")))
TEXTURES = ("stripes", "checker", "dots", "rings")
SHAPES = ("ellipse", "rectangle")


class SynthError(InputError):
    """Synthetic data cannot be made or read as asked (odd frame size, missing masks file, ...)."""


@dataclass(frozen=True)
class SynthClip:
    frames: np.ndarray   # (T, H, W, 3) uint8 RGB
    masks: np.ndarray    # (T, H, W) uint8: 0 background, 1..K object ids, the same id for an object in every frame
    fps: float


@dataclass(frozen=True)
class SynthObject:
    """How one object of a clip looks (written to the metadata JSON, handy for captions and tests)."""
    id: int
    shape: str
    texture: str
    color: tuple[int, int, int]
    leaves_frame: bool


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Bilinearly upsampled random grid: smooth noise in [0, 1] of ``shape`` (H, W)."""
    h, w = shape
    grid = rng.random((cells[0] + 1, cells[1] + 1))
    ys = np.linspace(0, cells[0], h)
    xs = np.linspace(0, cells[1], w)
    y0 = np.minimum(ys.astype(int), cells[0] - 1)
    x0 = np.minimum(xs.astype(int), cells[1] - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx + g10 * fy * (1 - fx) + g11 * fy * fx)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blue-green water: a vertical light gradient, smooth blotches (sand, weed) and fine grain. (H, W, 3) float."""
    light = np.linspace(1.0, 0.55, h)[:, None] * np.ones((1, w))
    blotch = _smooth_noise(rng, (h, w), (4, 6))
    fine = _smooth_noise(rng, (h, w), (max(2, h // 6), max(2, w // 6)))
    base = np.array([20.0, 110.0, 130.0])          # deep teal
    tint = np.array([30.0, 60.0, -10.0])           # toward green where the blotches are
    img = base[None, None] * light[..., None] + tint[None, None] * blotch[..., None]
    img = img + 25.0 * (fine[..., None] - 0.5)
    return img


def _texture(kind: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Brightness factor in about [0.6, 1.0] from object-local coordinates ``u``, ``v`` (pixels)."""
    if kind == "stripes":
        pattern = np.sin(2 * np.pi * (u + 0.5 * v) / period) > 0
    elif kind == "checker":
        pattern = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    elif kind == "dots":
        pattern = (np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / period)) < 0.5
    else:  # rings
        pattern = np.sin(2 * np.pi * np.hypot(u, v) / period) > -0.3
    return np.where(pattern, 1.0, 0.62)


def _trajectories(rng: np.random.Generator, n_objects: int, n_frames: int, w: int, h: int,
                  radii: np.ndarray) -> np.ndarray:
    """Centres (K, T, 2) as (x, y): smooth sinusoids. Object 0 swings beyond the left and right edges;
    the others oscillate around the middle with their own phases, so they cross it and each other."""
    t = np.arange(n_frames) / max(n_frames, 1)
    centres = np.empty((n_objects, n_frames, 2))
    for k in range(n_objects):
        phase = rng.uniform(0, 2 * np.pi)
        if k == 0:
            amp_x = w / 2 + radii[k, 0] * 1.6        # fully outside at the extremes
            centres[k, :, 0] = w / 2 + amp_x * np.sin(2 * np.pi * t + phase)
            centres[k, :, 1] = h / 2 + 0.15 * h * np.sin(4 * np.pi * t + phase)
        else:
            amp_x = rng.uniform(0.2, 0.32) * w
            amp_y = rng.uniform(0.12, 0.25) * h
            fx = rng.choice([1.0, 1.5])
            centres[k, :, 0] = w / 2 + rng.uniform(-0.1, 0.1) * w + amp_x * np.sin(2 * np.pi * fx * t + phase)
            centres[k, :, 1] = h / 2 + amp_y * np.cos(2 * np.pi * t + phase * 0.7)
    return centres


def render_clip(*, n_frames: int = 48, size: tuple[int, int] = (160, 96), n_objects: int = 3,
                fps: float = 12.0, seed: int = 0) -> SynthClip:
    """Render one clip in memory. ``size`` is (W, H)."""
    clip, _ = _render(n_frames=n_frames, size=size, n_objects=n_objects, fps=fps, seed=seed)
    return clip


def _render(*, n_frames: int, size: tuple[int, int], n_objects: int, fps: float,
            seed: int | np.random.SeedSequence, layers: list[np.ndarray] | None = None
            ) -> tuple[SynthClip, list[SynthObject]]:
    """The clip and its objects; when ``layers`` is a list, each object's whole (unoccluded) (T, H, W)
    shape is appended to it (tests check the occlusion order with them)."""
    w, h = size
    if n_frames < 1 or w < 8 or h < 8 or n_objects < 0 or n_objects > 255 or fps <= 0:
        raise SynthError(f"cannot render {n_frames} frames of {w}x{h} with {n_objects} objects at {fps} fps")
    rng = np.random.default_rng(seed)
    background = _background(rng, h, w)
    frames = np.broadcast_to(background.astype(np.float32), (n_frames, h, w, 3)).copy()
    masks = np.zeros((n_frames, h, w), dtype=np.uint8)

    radii = np.stack([rng.uniform(0.13, 0.2, n_objects) * w, rng.uniform(0.18, 0.28, n_objects) * h], axis=1)
    centres = _trajectories(rng, n_objects, n_frames, w, h, radii)
    colours = [PALETTE[i] for i in rng.permutation(len(PALETTE))]
    textures = [TEXTURES[i] for i in rng.permutation(len(TEXTURES))]
    ys = np.arange(h, dtype=np.float64)[None, :, None]
    xs = np.arange(w, dtype=np.float64)[None, None, :]
    objects = []
    for k in range(n_objects):
        shape = SHAPES[(k + int(rng.integers(2))) % 2]
        texture = textures[k % len(textures)]
        colour = colours[k % len(colours)]
        rx, ry = radii[k]
        u = xs - centres[k, :, 0][:, None, None]            # (T, 1, W)
        v = ys - centres[k, :, 1][:, None, None]            # (T, H, 1)
        if shape == "ellipse":
            inside = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
        else:
            inside = (np.abs(u) <= rx) & (np.abs(v) <= ry)  # (T, H, W)
        period = max(4.0, min(rx, ry) / 2)
        shade = _texture(texture, u, v, period)
        shade = np.broadcast_to(shade, inside.shape)
        frames[inside] = np.asarray(colour, dtype=np.float32) * shade[inside][:, None]
        masks[inside] = k + 1
        if layers is not None:
            layers.append(inside)
        in_view = inside.reshape(n_frames, -1).any(axis=1)
        objects.append(SynthObject(id=k + 1, shape=shape, texture=texture, color=tuple(int(c) for c in colour),
                                   leaves_frame=bool(not in_view.all())))
    frames += rng.normal(0.0, 2.0, size=frames.shape).astype(np.float32)
    frames = np.clip(frames, 0, 255).astype(np.uint8)
    return SynthClip(frames=frames, masks=masks, fps=float(fps)), objects


def rgb_to_yuv420p(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB (H, W even) -> the (3H/2, W) uint8 planes of yuv420p, BT.601 limited range.

    Done here rather than by FFmpeg's swscale, whose choice between code paths of different rounding can
    vary from one run to the next: with it, the same seed did not always give the same bytes."""
    rgb = image.astype(np.float32)
    h, w = rgb.shape[:2]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]          # elementwise sums, no BLAS: a fixed order
    y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b
    cr, cg, cb = (c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) for c in (r, g, b))
    u = 128.0 - 0.148 * cr - 0.291 * cg + 0.439 * cb
    v = 128.0 + 0.439 * cr - 0.368 * cg - 0.071 * cb
    planes = [np.clip(np.rint(c), 0, 255).astype(np.uint8).reshape(-1) for c in (y, u, v)]
    return np.concatenate(planes).reshape(h * 3 // 2, w)


def _encode(path: Path, frames: np.ndarray, fps: float) -> None:
    """Write (T, H, W, 3) RGB frames as H.264 (or MPEG-4 Part 2 when libx264 is missing) in MP4, key frame every second."""
    import av

    rate = Fraction(fps).limit_denominator(1001)
    gop = max(1, round(fps))
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.thread_count = 1   # byte-identical output for a seed
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast",
                              "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        else:
            stream.options = {"qscale": "3"}
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(image), format="yuv420p")
            frame.pts = i
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_jpeg(path: Path, image: np.ndarray, max_side: int | None = None) -> None:
    from PIL import Image

    img = Image.fromarray(image)
    if max_side is not None and max(img.size) > max_side:
        img.thumbnail((max_side, max_side))
    img.save(path, quality=92)


def selected_indices(n_frames: int, fps: float, seed: int | np.random.SeedSequence = 0) -> list[int]:
    """About one frame per second at irregular offsets (each second's frame drawn from its first half,
    seeded): the true frames of the images written to ``selected_frames``, strictly increasing."""
    step = max(1, round(fps))
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n_frames, step):
        end = min(start + max(1, step // 2), n_frames)
        out.append(int(rng.integers(start, end)))
    return out


def selected_name(video_id: str, number: int) -> str:
    """MVK's name of a video's ``number``-th selected frame (1-based ordinal, not a frame index)."""
    return f"{video_id}_{number:05d}.jpg"


def make_collection(out: str | Path, *, sites: tuple[str, ...] = SYNTH_SITES[:2], videos_per_site: int = 2,
                    n_frames: int = 48, size: tuple[int, int] = (160, 96), fps: float = 12.0,
                    n_objects: int = 3, seed: int = 0, on_video: Callable[[Path], None] | None = None) -> Path:
    """Write an MVK-layout collection under ``out`` and return ``out``:
    videos/<site>/<NNNN>.mp4, information/metadata/<site>/<NNNN>.json,
    information/selected_frames/<site>/<NNNN>_<nnnnn>.jpg (about one per second, at irregular offsets,
    named as MVK names them: ``nnnnn`` counts the selected frames of the video from 1; the metadata's
    ``selected_frames`` lists each one's name, number, true frame index and time),
    information/masks/<site>/<NNNN>.npz (key ``masks``: (T, H, W) uint8 ground truth of every frame).

    Also information/thumbnails/<site>/<NNNN>_<nnnnn>.jpg (80 px). Video ``v`` of site ``s`` is rendered
    from SeedSequence([seed, s, v]). ``on_video`` is called with each video's path once it is written."""
    out = Path(out)
    w, h = size
    if w % 2 or h % 2:
        raise SynthError(f"frame size {w}x{h}: width and height must be even (the video is yuv420p)")
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} exists and is not a folder")
    info = out / "information"
    for s, site in enumerate(sites):
        dirs = {name: base / site for name, base in (
            ("videos", out / "videos"), ("metadata", info / "metadata"), ("selected", info / "selected_frames"),
            ("thumbs", info / "thumbnails"), ("masks", info / "masks"))}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        for v in range(videos_per_site):
            video_id = f"{v + 1:04d}"
            clip, objects = _render(n_frames=n_frames, size=size, n_objects=n_objects, fps=fps,
                                    seed=np.random.SeedSequence([seed, s, v]))
            _encode(dirs["videos"] / f"{video_id}.mp4", clip.frames, fps)
            np.savez_compressed(dirs["masks"] / f"{video_id}.npz", masks=clip.masks)
            chosen = selected_indices(n_frames, fps, np.random.SeedSequence([seed, s, v, 1]))
            selected = []
            for number, f in enumerate(chosen, start=1):
                name = selected_name(video_id, number)
                _write_jpeg(dirs["selected"] / name, clip.frames[f])
                _write_jpeg(dirs["thumbs"] / name, clip.frames[f], max_side=80)
                selected.append({"name": name, "number": number, "frame": f, "time": f / fps})
            meta = {
                "site": site, "video_id": video_id, "fps": float(fps), "frame_count": n_frames,
                "width": w, "height": h, "duration": n_frames / fps, "seed": seed,
                "selected_frames": selected, "synthetic": True, "generator": "mvk_tools.synth",
                "objects": [{"id": o.id, "shape": o.shape, "texture": o.texture, "color": list(o.color),
                             "leaves_frame": o.leaves_frame} for o in objects],
            }
            (dirs["metadata"] / f"{video_id}.json").write_text(json.dumps(meta, indent=2) + "\n")
            if on_video is not None:
                on_video(dirs["videos"] / f"{video_id}.mp4")
    return out


def load_masks(collection: str | Path, site: str, video_id: str) -> np.ndarray:
    """The ground-truth masks written by ``make_collection`` for one video: (T, H, W) uint8."""
    path = Path(collection) / "information" / "masks" / site / f"{video_id}.npz"
    try:
        with np.load(path) as data:
            masks = data["masks"]
    except FileNotFoundError:
        raise SynthError(f"no ground-truth masks for {site}/{video_id}: {path} does not exist") from None
    except (OSError, ValueError, KeyError) as exc:
        raise SynthError(f"cannot read ground-truth masks {path}: {exc}") from None
    if masks.ndim != 3 or masks.dtype != np.uint8:
        raise SynthError(f"{path}: masks should be (T, H, W) uint8, found {masks.shape} {masks.dtype}")
    return masks


STATIC_KINDS = ("moving", "noise", "pan", "still")


def _static_frames(kind: str, rng: np.random.Generator, n_frames: int, size: tuple[int, int],
                   fps: float, seed: np.random.SeedSequence) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of one kind: ``moving`` (a normal clip), ``noise`` (one still picture with
    fresh sensor noise in every frame), ``pan`` (a still scene panned slowly, one pixel a frame, with sensor
    noise), ``still`` (the same picture in every frame)."""
    w, h = size
    if kind == "moving":
        return _render(n_frames=n_frames, size=size, n_objects=3, fps=fps, seed=seed)[0].frames
    wide = w + (n_frames if kind == "pan" else 0)
    scene = _background(rng, h, wide) + 40.0 * (_smooth_noise(rng, (h, wide), (h // 4, wide // 4))[..., None] - 0.5)
    if kind == "pan":
        frames = np.stack([scene[:, t:t + w] for t in range(n_frames)])
    else:
        frames = np.broadcast_to(scene[:, :w], (n_frames, h, w, 3)).copy()
    if kind != "still":
        frames = frames + rng.normal(0.0, 3.0, size=frames.shape)
    return np.clip(frames, 0, 255).astype(np.uint8)


def _degraded_jpeg(path: Path, image: np.ndarray, scale: float, quality: int) -> None:
    from PIL import Image
    img = Image.fromarray(image)
    if scale != 1:
        img = img.resize((max(8, round(img.size[0] * scale)), max(8, round(img.size[1] * scale))), Image.BILINEAR)
    img.save(path, quality=quality)


def make_static_collection(out: str | Path, *, site: str = SYNTH_SITES[0], kinds: tuple[str, ...] = STATIC_KINDS,
                           n_frames: int = 100, size: tuple[int, int] = (160, 96), fps: float = 10.0,
                           scale: float = 0.25, quality: int = 40, foreign: tuple[int, int] | None = (0, 2),
                           seed: int = 0) -> Path:
    """An MVK-layout collection (one site) to test where selected frames are placed: video ``v + 1`` is of
    kind ``kinds[v]`` (``_static_frames``), its selected frames (about one a second, ``selected_indices``)
    written at ``scale`` of the frame size with JPEG ``quality``. ``foreign`` = (a, b): a frame of video a
    (0-based) is slipped among video b's selected frames, in the middle of its numbers. The metadata's
    ``selected_frames`` give each image's true frame (None for the foreign one) and ``foreign_from``."""
    out = Path(out)
    w, h = size
    if w % 2 or h % 2:
        raise SynthError(f"frame size {w}x{h}: width and height must be even (the video is yuv420p)")
    dirs = {name: out / base / site for name, base in (("videos", "videos"), ("meta", "information/metadata"),
                                                       ("selected", "information/selected_frames"))}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    clips = []
    for v, kind in enumerate(kinds):
        ss = np.random.SeedSequence([seed, 7, v])
        frames = _static_frames(kind, np.random.default_rng(ss), n_frames, size, fps, ss)
        _encode(dirs["videos"] / f"{v + 1:04d}.mp4", frames, fps)
        clips.append(frames)
    for v, kind in enumerate(kinds):
        video_id = f"{v + 1:04d}"
        chosen: list[tuple[int | None, np.ndarray, str]] = [
            (f, clips[v][f], "") for f in selected_indices(n_frames, fps, np.random.SeedSequence([seed, 7, v, 1]))]
        if foreign is not None and foreign[1] == v:
            src = f"{foreign[0] + 1:04d}"
            chosen.insert(len(chosen) // 2, (None, clips[foreign[0]][n_frames // 2 + 1], src))
        selected = []
        for number, (f, image, src) in enumerate(chosen, start=1):
            name = selected_name(video_id, number)
            _degraded_jpeg(dirs["selected"] / name, image, scale, quality)
            selected.append({"name": name, "number": number, "frame": f,
                             "time": None if f is None else f / fps, "foreign_from": src})
        meta = {"site": site, "video_id": video_id, "fps": float(fps), "frame_count": n_frames, "width": w,
                "height": h, "duration": n_frames / fps, "kind": kind, "seed": seed, "synthetic": True,
                "generator": "mvk_tools.synth.make_static_collection", "selected_frames": selected}
        (dirs["meta"] / f"{video_id}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out
