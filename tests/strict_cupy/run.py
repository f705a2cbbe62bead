"""Run a script of the repository with the strict CuPy stand-in installed as `cupy`:

    python tests/strict_cupy/run.py train.py --backend cupy --iters 4 ...
    python tests/strict_cupy/run.py evaluate.py --backend cupy --checkpoint ...

The stand-in goes into sys.modules before the script (and so tinyseg.backend) imports cupy;
the script then runs as `python SCRIPT ARGS` would run it (runpy, as __main__, with its own
folder first on sys.path). Its exit status is the script's.
"""
import os
import runpy
import sys

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    if len(sys.argv) < 2:
        print("usage: python tests/strict_cupy/run.py SCRIPT [ARGS...]", file=sys.stderr)
        return 2
    sys.path.insert(0, TESTS)
    import strict_cupy
    strict_cupy.install()
    sys.path.remove(TESTS)
    script = os.path.abspath(sys.argv[1])
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(script)
    runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
