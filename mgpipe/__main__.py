import sys

from mgpipe.cli import main

sys.exit(main())
