r"""The CPU demo, end to end (see `demo/pipeline.py`):

  python tools/demo.py --workdir=workdir/demo
"""

import os
import sys

# Python puts this file's folder first on the path, where `demo` would be this file, not
# the `demo` package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

from demo import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from lipsync_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == "__main__":
  cli.run(pipeline.main)
