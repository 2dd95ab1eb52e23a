;; Shows its whole environment: on stderr as it is (NUL-separated), and as one output,
;; {"outputs": {"env": "K=V K=V ..."}}. For the secrets test: values must need no JSON
;; escaping. Up to 64 variables and 8 KiB of them.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 256) "{\"outputs\":{\"env\":\"")
  (data (i32.const 320) "\"}}")

  ;; Writes [ptr, ptr+len) to fd, however many calls it takes.
  (func $write_all (param $fd i32) (param $ptr i32) (param $len i32)
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $len)))
        (i32.store (i32.const 0) (local.get $ptr))
        (i32.store (i32.const 4) (local.get $len))
        (br_if $done (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $ptr (i32.add (local.get $ptr) (i32.load (i32.const 8))))
        (local.set $len (i32.sub (local.get $len) (i32.load (i32.const 8))))
        (br $more))))

  (func (export "_start")
    (local $size i32)
    (local $i i32)
    (drop (call $environ_sizes_get (i32.const 32) (i32.const 36)))
    (if (i32.gt_u (i32.load (i32.const 32)) (i32.const 64)) (then unreachable))
    (local.set $size (i32.load (i32.const 36)))
    (if (i32.gt_u (local.get $size) (i32.const 8192)) (then unreachable))
    (drop (call $environ_get (i32.const 1024) (i32.const 4096)))
    (call $write_all (i32.const 2) (i32.const 4096) (local.get $size))
    ;; NULs become spaces for the output string
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $size)))
        (if (i32.eqz (i32.load8_u (i32.add (i32.const 4096) (local.get $i))))
          (then (i32.store8 (i32.add (i32.const 4096) (local.get $i)) (i32.const 32))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $write_all (i32.const 1) (i32.const 256) (i32.const 19))
    (call $write_all (i32.const 1) (i32.const 4096) (local.get $size))
    (call $write_all (i32.const 1) (i32.const 320) (i32.const 3))))
