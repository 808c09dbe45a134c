"""Tiny shared plumbing for the command-line shells of every package.

Each subcommand is a module with ``NAME``, ``HELP``, ``DESCRIPTION`` (optional),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import only
argparse at module level so that ``--help`` stays instant; heavy imports (torch,
faiss, open_clip) happen inside ``run``. This module lives in ``search`` because it
is the one package every other package may import.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
import unicodedata
from collections.abc import Iterable, Sequence

from search.errors import MvkError


def unknown_option(tokens: Iterable[str], known: Iterable[str]) -> str | None:
    """The complaint about the first option in ``tokens`` that is none of ``known`` (nor an unambiguous start
    of one, which argparse accepts), naming the closest known option; None when every option is known.
    Negative numbers and everything after ``--`` are values, not options."""
    known = list(known)
    for token in tokens:
        if token == "--":
            break
        if not token.startswith("-") or token == "-" or _is_number(token):
            continue
        name = token.split("=", 1)[0]
        if name in known or (not name.startswith("--") and name[:2] in known):
            continue
        if name.startswith("--") and any(k.startswith(name) for k in known):
            continue
        close = difflib.get_close_matches(name, [k for k in known if k.startswith("--")], n=1, cutoff=0.6)
        return f"unknown option {name}" + (f" (did you mean {close[0]}?)" if close else "")
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: an option it does not know (``--idnex``) is named with the closest known one
    before anything else, so a typo is not answered with "--index is required"."""

    def parse_known_args(self, args=None, namespace=None):
        tokens = list(sys.argv[1:] if args is None else args)
        known = [option for action in self._actions for option in action.option_strings]
        problem = unknown_option(tokens, known)
        if problem:
            self.error(problem)
        return super().parse_known_args(args, namespace)


def build_parser(prog: str, description: str, command_modules: Sequence[str]) -> argparse.ArgumentParser:
    """An argparse parser with one subcommand per command module."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for name in command_modules:
        module = importlib.import_module(name)
        p = sub.add_parser(module.NAME, help=module.HELP,
                           description=getattr(module, "DESCRIPTION", module.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(prog: str, description: str, command_modules: Sequence[str], argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the chosen command, turn known errors into one clear line and exit code 2."""
    parser = build_parser(prog, description, command_modules)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()          # a closed pipe shows here, not at exit where it cannot be handled
        return code
    except BrokenPipeError:         # `mvk catalog | head`: the reader has gone; stop quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141                  # 128 + SIGPIPE, what a shell reports for a command killed by the pipe
    except MvkError as exc:
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted", file=sys.stderr)
        return 130


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1, refused at parse time with a message naming the value."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0, refused at parse time with a message naming the value."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def add_threads_argument(parser: argparse.ArgumentParser, default: str) -> None:
    """``--threads N``: intra-op threads of torch and FAISS for this command (``search.threads``)."""
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help=f"torch and FAISS threads per {default} (default: the thread policy's choice)")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def index_type(text: str) -> str:
    """argparse type: one of the named index types or a FAISS factory string FAISS accepts (checked at parse
    time, so a typo is refused before anything is built)."""
    from search.errors import InputError
    from search.faiss_index import check_factory
    try:
        check_factory(text.strip())
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def add_model_weight_arguments(parser: argparse.ArgumentParser) -> None:
    """``--random-weights``: the flag every model-loading command takes (tests and benchmarks only)."""
    parser.add_argument("--random-weights", action="store_true",
                        help="initialise the real architectures randomly instead of loading pretrained weights "
                             "(tests and speed benchmarks only: results are meaningless and are labelled so)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda[:N]")


class _Deprecated(argparse.Action):
    """A flag kept for one release under its old name: stores into the new flag's destination and says which
    flag to use instead."""

    def __init__(self, option_strings, dest, new_flag: str = "", **kwargs) -> None:
        self.new_flag = new_flag
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"note: {option_string} is deprecated and will be removed; use {self.new_flag}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str, dest: str) -> None:
    """Accept ``old`` as an alias of ``new`` (same ``dest``), listed as the old name, with a deprecation line
    when used."""
    parser.add_argument(old, dest=dest, action=_Deprecated, new_flag=new, metavar="FILE",
                        help=f"the old name of {new} (kept for one release)")


def add_encoder_arguments(parser: argparse.ArgumentParser, *, models: bool = True) -> None:
    """The flags that choose the CLIP encoder searching an index, the same in every command (``search.identity``
    applies them): ``--model``/``--pretrained`` (``models``), ``--clip-checkpoint`` (``--checkpoint`` kept one
    release), ``--random-weights``, ``--device``."""
    if models:
        parser.add_argument("--model", default=None, help="open_clip model (default: the one recorded in the index)")
        parser.add_argument("--pretrained", default=None, help="open_clip pretrained tag (default: the index's)")
    parser.add_argument("--clip-checkpoint", dest="clip_checkpoint", default=None, metavar="FILE",
                        help="local open_clip checkpoint file, for an index built from one (default: the index's "
                             "model with its pretrained tag)")
    add_deprecated_alias(parser, "--checkpoint", "--clip-checkpoint", "clip_checkpoint")
    add_model_weight_arguments(parser)


def encoder_choice(args: argparse.Namespace):
    """The ``search.identity.EncoderChoice`` of parsed ``add_encoder_arguments`` flags."""
    from search.identity import EncoderChoice
    return EncoderChoice(model=getattr(args, "model", None), pretrained=getattr(args, "pretrained", None),
                         checkpoint=getattr(args, "clip_checkpoint", None),
                         random_weights=bool(getattr(args, "random_weights", False)))


def printable(text: object) -> str:
    """``text`` safe to print in one cell of a table: control characters (a newline), bidirectional overrides
    (U+202E) and other invisible format characters shown as escapes, so a hostile name cannot break or
    reorder the lines around it."""
    return "".join(ch.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in str(text))
