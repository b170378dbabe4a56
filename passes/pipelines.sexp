; Pass pipelines: (pipeline NAME "description" PASS ...). `kiln opt -O0|-O1` and
; `kiln dump -O1` run these; `--passes a,b` runs any list.
;
; O1's order matters:
; - simplify first: it removes no-ops and folds per-channel arithmetic into convs, so the
;   later rules see canonical conv → batch_norm → add → relu chains;
; - fold-bn before bn-affine: a BN with a producer folds into it; only the ones left are
;   rewritten as multiply-adds for the following conv;
; - fuse-residual before fuse-activation: in relu(conv(x) + r) the add must become the
;   conv's residual first, then the relu applies to that conv and fuses; after an activation
;   is fused the residual can no longer be (act(y) + r is not act(y + r)).

(pipeline O0 "no optimization")
(pipeline O1 "default: simplify, fold BatchNorm, fuse residual adds and activations"
  simplify fold-bn bn-affine fuse-residual fuse-activation)
