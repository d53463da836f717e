"""The textbook SimCLR experiment on STL-10 (logic: histoclr/recipes/stl10.py).

    python pipelines/stl10_simclr.py --config configs/stl10/cpu.yaml --data-root DIR [key=value ...]
"""

import sys

from histoclr.recipes.stl10 import main

if __name__ == "__main__":
    sys.exit(main())
