"""Known bad backward: the adjoint gather that moves the gradients the forward's way (the shifts not transposed); its forward is right."""

from tests.bad_impls._common import bad_backward_record

IMPLEMENTATION = bad_backward_record("bad_unreversed_shifts", reverse=False)
