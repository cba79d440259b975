import sys

from pipeline.perf import main

sys.exit(main())
