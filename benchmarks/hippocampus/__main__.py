"""python -m benchmarks.hippocampus ..."""
import sys

from .cli import main

sys.exit(main())
