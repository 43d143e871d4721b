"""Regenerate every sample file: python sample_data/make_all.py (fixed seeds)."""
import glob
import os
import runpy

HERE = os.path.dirname(os.path.abspath(__file__))

if __name__ == "__main__":
    for script in sorted(glob.glob(os.path.join(HERE, "make_*.py"))):
        if not script.endswith("make_all.py"):
            print("running", os.path.basename(script))
            runpy.run_path(script, run_name="__main__")
