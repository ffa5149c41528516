;; The AdamW update of src/train/optimizer.ts as a WebAssembly SIMD kernel: four weights an instruction, with
;; exactly the float32 operations (IEEE-rounded, as WebAssembly requires of f32x4 mul/add/div/sqrt) that the
;; tensor-op update performs, in the same order, so its results are the same to the bit.
;; The bytes in adamw-wasm.ts are this file assembled: `node src/train/build-adamw-wasm.mjs` after a change.
(module
  (memory (export "memory") 1)

  ;; One update of n weights at byte offsets p, g, m, v (p, m and v updated in place):
  ;;   g' = g * scale; m = m * b1 + g' * b1c; v = v * b2 + (g' * g') * b2c
  ;;   p = p * decay - ((m / c1) / (sqrt(v / c2) + eps)) * rate
  (func (export "adamw")
    (param $p i32) (param $g i32) (param $m i32) (param $v i32) (param $n i32)
    (param $b1 f32) (param $b1c f32) (param $b2 f32) (param $b2c f32) (param $c1 f32) (param $c2 f32)
    (param $eps f32) (param $rate f32) (param $decay f32) (param $scale f32)
    (local $i i32) (local $off i32) (local $end4 i32)
    (local $B1 v128) (local $B1C v128) (local $B2 v128) (local $B2C v128) (local $C1 v128) (local $C2 v128)
    (local $EPS v128) (local $RATE v128) (local $DECAY v128) (local $SCALE v128)
    (local $gv v128) (local $mv v128) (local $vv v128)
    (local $gs f32) (local $ms f32) (local $vs f32)
    (local.set $B1 (f32x4.splat (local.get $b1)))
    (local.set $B1C (f32x4.splat (local.get $b1c)))
    (local.set $B2 (f32x4.splat (local.get $b2)))
    (local.set $B2C (f32x4.splat (local.get $b2c)))
    (local.set $C1 (f32x4.splat (local.get $c1)))
    (local.set $C2 (f32x4.splat (local.get $c2)))
    (local.set $EPS (f32x4.splat (local.get $eps)))
    (local.set $RATE (f32x4.splat (local.get $rate)))
    (local.set $DECAY (f32x4.splat (local.get $decay)))
    (local.set $SCALE (f32x4.splat (local.get $scale)))
    (local.set $end4 (i32.and (local.get $n) (i32.const -4)))
    (block $vdone
      (loop $vloop
        (br_if $vdone (i32.ge_u (local.get $i) (local.get $end4)))
        (local.set $off (i32.shl (local.get $i) (i32.const 2)))
        (local.set $gv (f32x4.mul (v128.load (i32.add (local.get $g) (local.get $off))) (local.get $SCALE)))
        (local.set $mv
          (f32x4.add
            (f32x4.mul (v128.load (i32.add (local.get $m) (local.get $off))) (local.get $B1))
            (f32x4.mul (local.get $gv) (local.get $B1C))))
        (local.set $vv
          (f32x4.add
            (f32x4.mul (v128.load (i32.add (local.get $v) (local.get $off))) (local.get $B2))
            (f32x4.mul (f32x4.mul (local.get $gv) (local.get $gv)) (local.get $B2C))))
        (v128.store (i32.add (local.get $m) (local.get $off)) (local.get $mv))
        (v128.store (i32.add (local.get $v) (local.get $off)) (local.get $vv))
        (v128.store (i32.add (local.get $p) (local.get $off))
          (f32x4.sub
            (f32x4.mul (v128.load (i32.add (local.get $p) (local.get $off))) (local.get $DECAY))
            (f32x4.mul
              (f32x4.div
                (f32x4.div (local.get $mv) (local.get $C1))
                (f32x4.add (f32x4.sqrt (f32x4.div (local.get $vv) (local.get $C2))) (local.get $EPS)))
              (local.get $RATE))))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $vloop)))
    ;; The last n mod 4 weights, one at a time with the same operations.
    (block $sdone
      (loop $sloop
        (br_if $sdone (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $off (i32.shl (local.get $i) (i32.const 2)))
        (local.set $gs (f32.mul (f32.load (i32.add (local.get $g) (local.get $off))) (local.get $scale)))
        (local.set $ms
          (f32.add
            (f32.mul (f32.load (i32.add (local.get $m) (local.get $off))) (local.get $b1))
            (f32.mul (local.get $gs) (local.get $b1c))))
        (local.set $vs
          (f32.add
            (f32.mul (f32.load (i32.add (local.get $v) (local.get $off))) (local.get $b2))
            (f32.mul (f32.mul (local.get $gs) (local.get $gs)) (local.get $b2c))))
        (f32.store (i32.add (local.get $m) (local.get $off)) (local.get $ms))
        (f32.store (i32.add (local.get $v) (local.get $off)) (local.get $vs))
        (f32.store (i32.add (local.get $p) (local.get $off))
          (f32.sub
            (f32.mul (f32.load (i32.add (local.get $p) (local.get $off))) (local.get $decay))
            (f32.mul
              (f32.div
                (f32.div (local.get $ms) (local.get $c1))
                (f32.add (f32.sqrt (f32.div (local.get $vs) (local.get $c2))) (local.get $eps)))
              (local.get $rate))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $sloop)))))
