"""The downloader's public names, where older code and the docs import them from.

The downloader itself is three modules of one idea each: :mod:`ddrm_helpers.http_protocol` (one
GET, its redirects, ranges, headers and deadlines), :mod:`ddrm_helpers.part_writer` (the ``.part``
file, its record, its hash and the disk) and :mod:`ddrm_helpers.fetch_policy` (the lock, the
sources in order, the retries and the one report when every source failed). The store
(:mod:`ddrm_helpers.store`) calls them; nothing here is more than a name.
"""

from .errors import ChecksumError, DownloadError
from .fetch_policy import RetryPolicy, download_file
from .part_writer import part_path, part_record_path
from .registry import format_size
from .store import fetch_checkpoint

__all__ = ["ChecksumError", "DownloadError", "RetryPolicy", "download_file", "fetch_checkpoint", "format_size",
           "part_path", "part_record_path"]
