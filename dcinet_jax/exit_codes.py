"""Exit codes of the `dcinet` command, in one place (README "Exit codes" explains recovery).

Schedulers key on these: requeue on INTERRUPTED, never on ERROR or NON_FINITE.
"""

OK = 0            # finished
ERROR = 1         # bad input, config or state on disk: one line on stderr names it
NON_FINITE = 3    # training stopped on a NaN/Inf loss or state; the last checkpoint is finite
INTERRUPTED = 75  # SIGTERM/SIGINT: the step was saved; run the same command to resume
                  # (75 is EX_TEMPFAIL of sysexits.h: "try again later")
