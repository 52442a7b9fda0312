"""Test helper: torchmetrics' own DDP state sync across simulated ranks, without processes."""

import copy


def simulate_ddp_sync(metrics):
    """Run torchmetrics' own `_sync_dist` on each simulated rank, with an in-memory all_gather."""
    sent = []
    for metric in metrics:  # what every rank puts on the wire, in call order
        calls = []
        copy.deepcopy(metric)._sync_dist(lambda t, group=None, calls=calls: calls.append(t) or [t])
        sent.append(calls)
    for metric in metrics:
        position = iter(range(len(sent[0])))

        def gather(tensor, group=None):
            i = next(position)
            return [rank_calls[i] for rank_calls in sent]

        metric._sync_dist(gather)


def values(result):
    return {k: float(v) for k, v in result.items()}
