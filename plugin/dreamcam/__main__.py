import sys

from dreamcam.cli import main

sys.exit(main())
