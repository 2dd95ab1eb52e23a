;; A plugin that tries to read files outside its folders. It reports the WASI errno of each
;; try ("000" would mean the file opened) as {"outputs": {"relative": "E", "absolute": E,
;; "symlink": E, "inputs_parent": E}} and, should any open succeed, copies what it read to
;; stderr so that a test would see the leak.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "../../../../../../etc/passwd")   ;; 28
  (data (i32.const 1088) "/etc/passwd")                    ;; 11
  (data (i32.const 1120) "passwd-link")                    ;; 11
  (data (i32.const 1152) "../secret.txt")                  ;; 13
  (data (i32.const 1280) "{\"outputs\":{\"relative\":")     ;; 23
  (data (i32.const 1312) ",\"absolute\":")                  ;; 12
  (data (i32.const 1344) ",\"symlink\":")                   ;; 11
  (data (i32.const 1376) ",\"inputs_parent\":")             ;; 17
  (data (i32.const 1408) "}}")                             ;; 2

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

  ;; Writes a number below 1000 to stdout as a JSON string of three digits ("076").
  (func $num (param $n i32)
    (i32.store8 (i32.const 63) (i32.const 34))
    (i32.store8 (i32.const 67) (i32.const 34))
    (i32.store8 (i32.const 64) (i32.add (i32.const 48) (i32.div_u (local.get $n) (i32.const 100))))
    (i32.store8 (i32.const 65) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $n) (i32.const 10)) (i32.const 10))))
    (i32.store8 (i32.const 66) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
    (call $write_all (i32.const 1) (i32.const 63) (i32.const 5)))

  ;; Tries to open a path under preopen `dir`; returns the errno, leaking the file if it opened.
  (func $try (param $dir i32) (param $path i32) (param $len i32) (result i32)
    (local $errno i32)
    (local.set $errno
      (call $path_open (local.get $dir) (i32.const 1) (local.get $path) (local.get $len)
        (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 48)))
    (if (i32.eqz (local.get $errno))
      (then
        (i32.store (i32.const 16) (i32.const 8192))
        (i32.store (i32.const 20) (i32.const 4096))
        (drop (call $fd_read (i32.load (i32.const 48)) (i32.const 16) (i32.const 1) (i32.const 24)))
        (call $write_all (i32.const 2) (i32.const 8192) (i32.load (i32.const 24)))))
    (local.get $errno))

  (func (export "_start")
    (call $write_all (i32.const 1) (i32.const 1280) (i32.const 23))
    (call $num (call $try (i32.const 3) (i32.const 1024) (i32.const 28)))
    (call $write_all (i32.const 1) (i32.const 1312) (i32.const 12))
    (call $num (call $try (i32.const 3) (i32.const 1088) (i32.const 11)))
    (call $write_all (i32.const 1) (i32.const 1344) (i32.const 11))
    (call $num (call $try (i32.const 3) (i32.const 1120) (i32.const 11)))
    (call $write_all (i32.const 1) (i32.const 1376) (i32.const 17))
    (call $num (call $try (i32.const 4) (i32.const 1152) (i32.const 13)))
    (call $write_all (i32.const 1) (i32.const 1408) (i32.const 2))))
