"""The smallbench leaderboard: `python leaderboard_app.py [RESULTS]`, and a Hugging Face Space's app_file.

Reads result records from RESULTS, else the Hub dataset named by SMALLBENCH_RESULTS_REPO, else ./results.
"""

import sys

from smallbench.app import main
from smallbench.cli import guard

if __name__ == "__main__":
    guard(lambda: main(sys.argv[1] if len(sys.argv) > 1 else None))
