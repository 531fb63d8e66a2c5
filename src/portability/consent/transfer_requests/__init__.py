"""Transfer requests as the consent store records them: archives and snapshots apps ask for.

This is the consent store's side of a transfer: the request, its state and the facts a
builder reports. Building one (reading the current-state view, writing the archive or the
snapshot's pages) is the :mod:`portability.transfers` package.

- :mod:`.store`: :class:`TransferStore`, which creates, reads and advances requests;
- :mod:`.rules`: what a request is checked against on its consent;
- :mod:`.views`: what the store hands out (:class:`TransferView`) and takes in (the facts).
"""

from portability.consent.transfer_requests.store import TransferStore, delete_archive, download_url
from portability.consent.transfer_requests.views import ArchiveFacts, SnapshotFacts, TransferView

__all__ = [
    "ArchiveFacts",
    "SnapshotFacts",
    "TransferStore",
    "TransferView",
    "delete_archive",
    "download_url",
]
