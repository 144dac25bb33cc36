"""The store's reference half: corporate actions as the provider listed them. A base of
``Store`` like ``Coordination``; it runs its SQL through the same transactions."""

from __future__ import annotations

from enrichctl.domain import CorporateAction, now_ms
from enrichctl.store.core import StoreCore
from enrichctl.store.queries import series as series_sql


class ReferenceStore(StoreCore):
    """Corporate actions as the provider listed them."""

    async def actions_store(self, provider: str, actions: list[CorporateAction]) -> None:
        if not actions:
            return
        now = now_ms()
        async with self._write() as conn:
            await conn.execute(series_sql.actions_upsert(self.dialect), [
                {"symbol": a.symbol, "kind": a.kind, "ex_date": a.ex_date, "ratio": a.ratio,
                 "amount": a.amount, "provider": provider, "fetched_at": now}
                for a in actions
            ])

    async def actions_list(
        self, symbol: str | None = None, provider: str | None = None
    ) -> list[CorporateAction]:
        async with self._read() as conn:
            rows = (await conn.execute(series_sql.actions_select(symbol, provider))).all()
        return [CorporateAction(r.symbol, r.kind, r.ex_date, r.ratio, r.amount) for r in rows]
