import sys

from pipeline.tools.perf import main

sys.exit(main())
