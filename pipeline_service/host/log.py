"""The package's log records go through the host's logger.

An ahserver host logs with appPublic's ``MyLogger``, which ahserver configures from
config.json ``logger`` (name, level, file) before it calls the host's init function.
The package logs with the standard ``logging`` module; this handler forwards its
records (traceback included) to that logger, so the details behind an "internal
error" answer are in the host's log file, with time stamps.
"""
import logging
import traceback

from appPublic.log import MyLogger
from appPublic.timeUtils import timestampstr

PACKAGE_LOGGER = "pipeline_service"
HOST_LEVELS = {logging.CRITICAL: "critical", logging.ERROR: "error", logging.WARNING: "warning",
               logging.INFO: "info", logging.DEBUG: "debug"}


def host_level(levelno):
    """appPublic's name for a logging level (the nearest one at or below it)."""
    return next((name for level, name in HOST_LEVELS.items() if levelno >= level), "debug")


class HostLogHandler(logging.Handler):
    def __init__(self, host_logger):
        super().__init__()
        self.host_logger = host_logger

    def emit(self, record):
        try:
            name = host_level(record.levelno)
            if MyLogger.klass.levels[name] > self.host_logger.level:
                return  # below the host's configured level
            self.write(name, record)
        except Exception:
            self.handleError(record)

    def write(self, levelname, record):
        """One line in the host logger's own format, naming the record's true origin
        (MyLogger.log would name the caller of logging's machinery instead)."""
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        line = self.host_logger.formater % {
            "timestamp": timestampstr(), "name": self.host_logger.name, "levelname": levelname,
            "filename": record.pathname, "lineno": record.lineno, "message": message}
        self.host_logger.open_logger()
        try:
            self.host_logger.logger.write(line)
            self.host_logger.logger.flush()
        finally:
            self.host_logger.close_logger()

    @staticmethod
    def formatException(exc_info):
        return "".join(traceback.format_exception(*exc_info)).rstrip()


def use_host_logger():
    """Forward the package's records to the host's logger, once; False if the host has none."""
    host_logger = MyLogger.instance
    package = logging.getLogger(PACKAGE_LOGGER)
    if host_logger is None or any(isinstance(h, HostLogHandler) for h in package.handlers):
        return host_logger is not None
    package.addHandler(HostLogHandler(host_logger))
    if package.level == logging.NOTSET:  # step outcomes and start/stop are INFO records
        package.setLevel(logging.INFO)
    return True
