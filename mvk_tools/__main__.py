import sys

from mvk_tools.cli import main

sys.exit(main())
