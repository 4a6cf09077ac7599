"""An independent listing of a segment row's crop windows, the oracle for the draws
spkid.train.batches.SegmentBatches makes without listing them."""


def crop_windows(segment: dict) -> list[tuple[int, int]]:
    """(first start, jitter) of each crop window of a segment row: a crop drawn from a
    window starts anywhere in [first start, first start + jitter]."""
    hop, last = segment["hop"], segment["view_frames"] - segment["num_frames"]
    return [(segment["start_frame"] + k * hop, min(hop - 1, last - k * hop))
            for k in range(segment["windows"])]
