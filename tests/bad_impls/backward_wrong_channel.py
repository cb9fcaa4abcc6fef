"""Known bad backward: the vertical branch's gradient accumulated into the next channel's kernels; its forward is right."""

from tests.bad_impls._common import bad_backward_record

IMPLEMENTATION = bad_backward_record("bad_backward_wrong_channel", wrong_channel=True)
