"""CE2P's boundary rule, shared by the label-map targets (numpy) and the RoI targets (torch)."""

ALL, HEAD, TAIL = slice(None), slice(None, -1), slice(1, None)

#: (marked pixels, compared pixels) of each of CE2P's four directions, as slices of a label map
CE2P_EDGE_PAIRS = (
    ((TAIL, ALL), (HEAD, ALL)),    # vertical: the lower pixel of the pair
    ((ALL, HEAD), (ALL, TAIL)),    # horizontal: the left pixel
    ((HEAD, HEAD), (TAIL, TAIL)),  # diagonal "\": the upper-left pixel
    ((HEAD, TAIL), (TAIL, HEAD)),  # anti-diagonal "/": the upper-right pixel
)
