"""`icu-unlearn launch [accelerate options] -- COMMAND ...`: several processes, one exit code.

`accelerate launch` reports any child's failure as its own exit 1: with one process
it raises CalledProcessError, with several torch.distributed's elastic agent raises
ChildFailedError, and either escapes as an uncaught exception (with `--quiet`, as
sys.exit(1)). A run that ended `incomplete` (3) or refused its input (2) then reads
as a crash. This launcher runs the same launcher (`accelerate.commands.launch`, so
every accelerate option and config file works: DDP, DeepSpeed, FSDP) on
`-m icu_unlearn COMMAND ...`, and exits with the children's code instead:

    0 every process finished; 2 bad input; 3 incomplete (or, for audit, leaked);
    130 interrupted; any other code a crash; a child killed by signal S: 128 + S.

When processes disagree, the worst code wins: a crash over an interruption over bad
input over incomplete (`worst_exit_code`), and a process the agent killed because
another failed first (a signal) counts only when no process exited on its own.

`--debug` becomes ACCELERATE_DEBUG_MODE=true in the children's environment (what it
sets there), because accelerate itself answers a failure under it with exit 1; for
the same reason an accelerate config file with `debug: true` still gives 1, and
`--quiet` is dropped (the launcher never prints the agent's traceback anyway). Also
`python -m icu_unlearn.launch ...`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from .errors import UsageError

USAGE = (
    "icu-unlearn launch [accelerate launch options] -- COMMAND [ARGS], e.g. icu-unlearn "
    "launch --config_file configs/accelerate/ddp.yaml --num_processes 2 -- run CONFIG.yaml "
    "--out DIR"
)

# How bad each expected exit code is; any other non-zero code is a crash, the worst.
SEVERITY = {0: 0, 3: 1, 2: 2, 130: 3}
CRASH = 4


def _shell_code(code: int) -> int:
    """A child's return code as a shell shows it: -S (killed by signal S) is 128 + S."""
    return 128 - code if code < 0 else code


def worst_exit_code(codes: list[int]) -> int:
    """The one exit code for the children's `codes` (subprocess return codes, -S for a
    child killed by signal S). Codes from signals count only when no child exited on its
    own: the agent kills the others once one fails."""
    own = [c for c in codes if c >= 0]
    chosen = own if own else [_shell_code(c) for c in codes]
    return max(chosen, key=lambda c: (SEVERITY.get(c, CRASH), c))


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """[accelerate options] -- COMMAND ... -> (options, command)."""
    if "--" not in argv:
        raise UsageError(f"give the icu-unlearn command after --: {USAGE}")
    cut = argv.index("--")
    command = argv[cut + 1 :]
    if not command:
        raise UsageError(f"no command after --: {USAGE}")
    return argv[:cut], command


def _accelerate_args(options: list[str], command: list[str]):
    from accelerate.commands.launch import launch_command_parser

    options = [o for o in options if o not in ("-q", "--quiet")]
    if "--debug" in options:
        options.remove("--debug")
        os.environ["ACCELERATE_DEBUG_MODE"] = "true"  # what --debug sets for the children
    try:
        return launch_command_parser().parse_args([*options, "-m", "icu_unlearn", *command])
    except SystemExit:  # argparse printed why
        raise UsageError("accelerate launch refused these options (see above)") from None


def launch(argv: list[str]) -> int:
    """Run `accelerate launch [options] -m icu_unlearn COMMAND ...`; the children's exit code."""
    from accelerate.commands.launch import launch_command
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if argv in (["-h"], ["--help"]):
        print(f"usage: {USAGE}\n{__doc__}")
        return 0
    options, command = split_argv(argv)
    args = _accelerate_args(options, command)
    try:
        launch_command(args)
    except ChildFailedError as err:  # several processes (torch.distributed's agent)
        codes = {rank: failure.exitcode for rank, failure in err.failures.items()}
    except subprocess.CalledProcessError as err:  # one process (a plain subprocess)
        codes = {0: err.returncode}
    else:
        return 0
    code = worst_exit_code(list(codes.values()))
    shown = ", ".join(f"rank {rank}: {_describe(c)}" for rank, c in sorted(codes.items()))
    print(f"icu-unlearn launch: exit {code} ({shown})", file=sys.stderr)
    return code


def _describe(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"


def main(argv: list[str] | None = None) -> int:
    try:
        return launch(sys.argv[1:] if argv is None else argv)
    except UsageError as err:
        print(f"icu-unlearn launch: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
