"""Segment your own photos with a trained checkpoint: see tinyseg/predict.py.

    python predict.py --checkpoint runs/RUN/best.npz photo.jpg more_photos/ --out pictures
"""
import sys

import tinyseg  # noqa: F401  (before NumPy: it sets OpenBLAS's thread timeout, see tinyseg/__init__.py)
from tinyseg.predict import main

if __name__ == "__main__":
    sys.exit(main())
