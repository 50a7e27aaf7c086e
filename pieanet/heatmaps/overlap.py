"""Work on the next items while the caller handles the current one, results in the items' order (no torch).

make_heatmap decodes and predicts the next photos on background threads while the main thread writes the current
photo's files and its summary row, so decoding, the network and encoding overlap on a machine's cores (Pillow's
decoders and encoders, numpy's loops and torch release the GIL). Only the caller writes anything: the bookkeeping
(row order, the ledger, the lock) stays in one thread, in the order it had without overlap.
"""

import threading

POLL_SECONDS = 0.1  # how often a waiting worker looks whether the caller has stopped


def in_order(work, items, workers=1, ahead=1):
    """Yield ``work(item)`` for each of ``items`` in their order. ``workers`` daemon threads compute results at most
    ``ahead`` items beyond the one the caller is handling (so at most ``ahead + 1`` results exist at once); with no
    worker, or one item, everything runs in the caller's thread. An exception raised by ``work`` is raised to the
    caller at that item's turn, after the results before it, and no later item is started. When the caller stops
    early (an exception, a closed generator), the workers stop after the item each is computing."""
    items = list(items)
    if workers < 1 or len(items) < 2:
        for item in items:
            yield work(item)
        return
    slots = threading.Semaphore(ahead + 1)  # results started and not yet handled by the caller
    results, ready = [None] * len(items), [threading.Event() for _ in items]
    claim, stop, following = threading.Lock(), threading.Event(), iter(range(len(items)))

    def run():
        while not stop.is_set():
            if not slots.acquire(timeout=POLL_SECONDS):
                continue
            with claim:
                index = next(following, None)
            if index is None or stop.is_set():
                return
            try:
                results[index] = (True, work(items[index]))
            except BaseException as error:  # handed to the caller, raised there in order
                results[index] = (False, error)
                stop.set()
            ready[index].set()

    threads = [threading.Thread(target=run, name=f"in_order-{n}", daemon=True) for n in range(min(workers, len(items)))]
    for thread in threads:
        thread.start()
    try:
        for index in range(len(items)):
            while not ready[index].wait(POLL_SECONDS):  # a timeout, so Ctrl-C reaches the caller while it waits
                pass
            ok, value = results[index]
            results[index] = None
            if not ok:
                raise value
            yield value
            slots.release()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
