"""The data error: one message naming the file at fault and the problem."""

from typing import Optional


class DataError(ValueError):
  """A problem with the data; the message names the file and the problem.

  Attributes:
    file: the file (or folder) at fault, when there is one.
  """

  def __init__(self, message: str, file: Optional[str] = None):
    super().__init__(message)
    self.file = file

  def __reduce__(self):  # Keeps `file` through pickling (Grain workers).
    return type(self), (str(self), self.file)
