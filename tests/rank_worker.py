"""One rank of tests.ranks.run_ranks: `python -m tests.rank_worker JOB RESULT` imports the
job's function, calls it, and pickles ("ok", value) or ("error", traceback) into RESULT."""

import importlib
import pickle
import sys
import traceback


def main(job_path: str, result_path: str) -> int:
    with open(job_path, "rb") as job:
        module, name, args, kwargs = pickle.load(job)
    try:
        outcome = ("ok", getattr(importlib.import_module(module), name)(*args, **kwargs))
        payload = pickle.dumps(outcome)
    except BaseException:  # noqa: BLE001 - every failure, SystemExit included, goes back to the test
        outcome = ("error", traceback.format_exc())
        payload = pickle.dumps(outcome)
    with open(result_path, "wb") as result:
        result.write(payload)
    return 0 if outcome[0] == "ok" else 1


if __name__ == "__main__":
    code = main(*sys.argv[1:])
    # sys.exit looked up after the job: init_distributed wraps it to note a failing exit, which
    # then ends the process at once instead of waiting for peers at teardown (comm.py)
    sys.exit(code)
