"""A user's app module: a shop's background jobs, and the service code that enqueues them."""

from __future__ import annotations

from decimal import Decimal

from engine import Backoff, Engine, JobContext, UnrecoverableError

app = Engine()  # in production: ENGINE_REDIS_URL, ENGINE_NAMESPACE

attempts_seen: list[int] = []
mailed: list[str] = []  # stands in for a mail client


@app.on_startup
async def open_mailer(state: dict[str, object]) -> None:  # once per worker process
    state["mailer"] = mailed


@app.task(queue="payments", timeout=10, max_attempts=4, backoff=Backoff(initial=0.05, max=0.2))
async def charge(ctx: JobContext, order_id: int, amount: Decimal) -> str:
    """Charge an order; the payment provider times out on a first try."""
    attempts_seen.append(ctx.attempt)
    if ctx.attempt == 1:
        raise ConnectionError("the payment provider timed out")
    assert isinstance(amount, Decimal)  # converted by the annotation, as on a worker
    await ctx.progress(0.5)
    receipt = send_receipt.with_options(job_id=f"receipt-{order_id}")  # once, even if this retries
    await receipt.enqueue(order_id, f"order-{order_id}@example.com")
    await ctx.progress(1.0)
    return f"charged:{order_id}:{amount}"


@app.task(queue="emails", timeout=10, max_attempts=3)
async def send_receipt(ctx: JobContext, order_id: int, email: str) -> str:
    if "@" not in email:
        raise UnrecoverableError(f"not an email address: {email!r}")
    await ctx.log(f"receipt for order {order_id} to {email}")
    ctx.state["mailer"].append(email)
    return f"sent:{order_id}"


@app.task(timeout=10)
def checksum(text: str) -> int:  # a plain def: runs in a worker thread
    return sum(text.encode())


async def place_order(order_id: int, amount: Decimal) -> str:
    """The code under test: what a request handler would call. Returns the charge's job id."""
    job = await charge.with_options(idempotency_key=f"order-{order_id}").enqueue(order_id, amount)
    return job.id
