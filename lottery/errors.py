"""The one exception type the command line turns into a one-line message and a non-zero exit."""


class LotteryError(Exception):
    """Bad input (config, data, results directory): the message names the key, file or value."""


class Preempted(Exception):
    """SIGTERM arrived: a checkpoint was written and the run stopped; the same command continues."""
