"""Guard a paginated listing against a server that misbehaves: pages that repeat, or a ``next`` that never ends.

Pure bookkeeping, no I/O: the clients feed each page's ids and the total the server reported,
and :meth:`PageGuard.check` raises :class:`~memsyncd.errors.MisbehavingServerError` as soon as

* a non-empty page holds only ids already seen on earlier pages (the server ignores the page
  number, or starts over past the end), or
* more pages were read than the reported total can fill, plus some slack for memories created
  while the listing runs (``next`` keeps pointing further).

The caller stops reading at that error; nothing read so far is lost (earlier pages were already
handled one by one), and the next run lists again from the start.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from memsyncd.errors import MisbehavingServerError

SLACK_PAGES = 2  # pages beyond the reported total that a growing listing may legitimately need


@dataclass
class PageGuard:
    """The ids and page count of one listing so far."""

    service: str
    seen: set[str] = field(default_factory=set)
    pages: int = 0
    max_total: int = 0
    largest_page: int = 0  # the longest page so far: a server may send fewer per page than asked

    def check(self, ids: Iterable[str], total: int | None) -> None:
        """Record one page; raise when the listing cannot be trusted to end.

        Args:
            ids: the ids on this page.
            total: the item count the server reported with this page (None when it sent none).

        Raises:
            MisbehavingServerError: the page repeats earlier ones, or pages run past the total.
        """
        page_ids = list(ids)
        self.pages += 1
        if isinstance(total, int) and total >= 0:
            self.max_total = max(self.max_total, total)
        if page_ids and all(item in self.seen for item in page_ids):
            raise MisbehavingServerError(
                f"{self.service} sent page {self.pages} of a listing with only memories it had already sent "
                "(it repeats pages instead of ending the listing); the listing was stopped there and the next "
                "sync lists again. If this persists, report it to the server's operator.", service=self.service)
        self.seen.update(page_ids)
        self.largest_page = max(self.largest_page, len(page_ids))
        bound = math.ceil(self.max_total / max(self.largest_page, 1)) + SLACK_PAGES
        if self.pages > bound:
            raise MisbehavingServerError(
                f"{self.service} kept announcing a next page after {self.pages - 1} pages, more than its reported "
                f"total of {self.max_total} memories can fill; the listing was stopped there and the next sync "
                "lists again. If this persists, report it to the server's operator.", service=self.service)
