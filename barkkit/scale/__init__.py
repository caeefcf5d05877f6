"""Scale-out on Ray: batch generation and detection over a cluster, on the public ``Pipeline`` API only.

``barkkit.scale.rows`` (batch files) and ``barkkit.scale.outputs`` (is an output complete?) need no Ray; the
job modules import Ray when a job runs (``pip install 'barkkit[ray]'``).
"""

from barkkit.scale.outputs import is_complete_audio
from barkkit.scale.rows import BatchRow, read_batch_file

__all__ = ["BatchRow", "read_batch_file", "is_complete_audio"]
