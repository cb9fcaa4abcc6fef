"""Known bad backward: pruned kernels get gradient (the pruning mask dropped in the backward); its forward is right."""

from tests.bad_impls._common import bad_backward_record

IMPLEMENTATION = bad_backward_record("bad_backward_ignores_sparsity", mask=False)
