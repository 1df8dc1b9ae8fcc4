import sys

from dcnprobe.benchmarks.runner import main

sys.exit(main())
