;; csv-profile: a Sluice plugin, written by hand in WebAssembly text so that it runs on any
;; machine with nothing but Sluice (wasmtime compiles .wat directly).
;;
;; Profiles a CSV file in the step's work folder and fails the step when the file's shape is
;; wrong. Config (`wasm.config`):
;;   path      the CSV file, relative to the work folder (/work)   required
;;   min_rows  the fewest data rows the file may have               default 1
;;   max_empty the most empty fields the file may have              default 0
;; Result: outputs {rows, columns, empty_fields, ragged_rows}; status `failed` with a message
;; when a row's field count differs from the header's, there are more than max_empty empty
;; fields, or fewer than min_rows rows. A summary line goes to stderr (the step log).
;;
;; Limits of a hand-written plugin: no quoted fields (a comma always separates), config
;; strings without escapes, input document up to 64 KiB (the config is read from its start).
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))

  ;; 0..64 scratch for WASI calls, 64..96 number digits, 1024.. the path, 2048.. constants,
  ;; 4096..65536 the output, 65536.. stdin, 131072.. file chunks.
  (memory (export "memory") 3)
  (data (i32.const 2048) "\"path\":\"")                                 ;; 8
  (data (i32.const 2064) "\"min_rows\":")                               ;; 11
  (data (i32.const 2080) "{\"outputs\":{\"rows\":")                     ;; 19
  (data (i32.const 2112) ",\"columns\":")                               ;; 11
  (data (i32.const 2128) ",\"empty_fields\":")                          ;; 16
  (data (i32.const 2160) ",\"ragged_rows\":")                           ;; 15
  (data (i32.const 2192) "},\"status\":\"failed\",\"message\":\"")       ;; 31
  (data (i32.const 2240) " rows differ in field count from the header;") ;; 44
  (data (i32.const 2304) " fields are empty;")                          ;; 18
  (data (i32.const 2336) " data rows, fewer than min_rows ")            ;; 32
  (data (i32.const 2384) "csv-profile: ")                               ;; 13
  (data (i32.const 2400) " rows x ")                                    ;; 8
  (data (i32.const 2416) " columns, ")                                  ;; 10
  (data (i32.const 2432) " empty fields, ")                             ;; 15
  (data (i32.const 2448) " ragged rows\n")                              ;; 13
  (data (i32.const 2464) "csv-profile: config.path is missing\n")       ;; 36
  (data (i32.const 2512) "csv-profile: cannot open ")                   ;; 25
  (data (i32.const 2544) "csv-profile: the input document is over 64 KiB\n") ;; 47
  (data (i32.const 2608) " in the work folder\n")                       ;; 20
  (data (i32.const 2656) "\"max_empty\":")                              ;; 12

  (global $out (mut i32) (i32.const 0))
  (global $in_len (mut i32) (i32.const 0))
  ;; the parser's state
  (global $fields (mut i32) (i32.const 0))
  (global $field_len (mut i32) (i32.const 0))
  (global $line_len (mut i32) (i32.const 0))
  (global $cols (mut i32) (i32.const 0))
  (global $rows (mut i64) (i64.const 0))
  (global $empties (mut i64) (i64.const 0))
  (global $ragged (mut i64) (i64.const 0))

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

  ;; Appends bytes to the output buffer (4096..65536).
  (func $emit (param $ptr i32) (param $len i32)
    (if (i32.gt_u (i32.add (global.get $out) (local.get $len)) (i32.const 61440))
      (then (return)))
    (memory.copy (i32.add (i32.const 4096) (global.get $out)) (local.get $ptr) (local.get $len))
    (global.set $out (i32.add (global.get $out) (local.get $len))))

  ;; Appends a number in decimal.
  (func $emit_num (param $n i64)
    (local $p i32)
    (local.set $p (i32.const 96))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $n) (i64.const 10)))))
      (local.set $n (i64.div_u (local.get $n) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $n) (i64.const 0))))
    (call $emit (local.get $p) (i32.sub (i32.const 96) (local.get $p))))

  ;; Writes the output buffer to `fd` and empties it.
  (func $flush (param $fd i32)
    (call $write_all (local.get $fd) (i32.const 4096) (global.get $out))
    (global.set $out (i32.const 0)))

  ;; The offset in stdin just past the first match of a pattern, or -1.
  (func $find (param $pat i32) (param $len i32) (result i32)
    (local $i i32) (local $j i32)
    (block $none
      (loop $at
        (br_if $none (i32.gt_u (i32.add (local.get $i) (local.get $len)) (global.get $in_len)))
        (local.set $j (i32.const 0))
        (block $differs
          (loop $cmp
            (br_if $differs
              (i32.ne (i32.load8_u (i32.add (i32.const 65536) (i32.add (local.get $i) (local.get $j))))
                      (i32.load8_u (i32.add (local.get $pat) (local.get $j)))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (if (i32.eq (local.get $j) (local.get $len))
              (then (return (i32.add (local.get $i) (local.get $len)))))
            (br $cmp)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $at)))
    (i32.const -1))

;; The number after a key pattern (`"min_rows":`), as digits or a string of digits (a
  ;; templated value), or `default` when the key is absent.
  (func $config_num (param $pat i32) (param $len i32) (param $default i64) (result i64)
    (local $at i32) (local $c i32) (local $n i64)
    (local.set $at (call $find (local.get $pat) (local.get $len)))
    (if (i32.lt_s (local.get $at) (i32.const 0)) (then (return (local.get $default))))
    (if (i32.eq (i32.load8_u (i32.add (i32.const 65536) (local.get $at))) (i32.const 34))
      (then (local.set $at (i32.add (local.get $at) (i32.const 1)))))
    (block $end
      (loop $digit
        (br_if $end (i32.ge_u (local.get $at) (global.get $in_len)))
        (local.set $c (i32.sub (i32.load8_u (i32.add (i32.const 65536) (local.get $at))) (i32.const 48)))
        (br_if $end (i32.gt_u (local.get $c) (i32.const 9)))
        (local.set $n (i64.add (i64.mul (local.get $n) (i64.const 10)) (i64.extend_i32_u (local.get $c))))
        (local.set $at (i32.add (local.get $at) (i32.const 1)))
        (br $digit)))
    (local.get $n))

  (func $end_field
    (if (i32.eqz (global.get $field_len))
      (then (global.set $empties (i64.add (global.get $empties) (i64.const 1)))))
    (global.set $fields (i32.add (global.get $fields) (i32.const 1)))
    (global.set $field_len (i32.const 0)))

  (func $end_row
    (call $end_field)
    (if (i32.eqz (global.get $cols))
      (then (global.set $cols (global.get $fields)))
      (else
        (global.set $rows (i64.add (global.get $rows) (i64.const 1)))
        (if (i32.ne (global.get $fields) (global.get $cols))
          (then (global.set $ragged (i64.add (global.get $ragged) (i64.const 1)))))))
    (global.set $fields (i32.const 0))
    (global.set $line_len (i32.const 0)))

  (func (export "_start")
    (local $n i32) (local $at i32) (local $plen i32) (local $c i32) (local $i i32)
    (local $min i64) (local $max_empty i64) (local $fd i32) (local $bad i32)
    ;; 1. the input document
    (block $eof
      (loop $more
        (if (i32.ge_u (global.get $in_len) (i32.const 65536))
          (then
            (call $write_all (i32.const 2) (i32.const 2544) (i32.const 47))
            (call $proc_exit (i32.const 2))))
        (i32.store (i32.const 16) (i32.add (i32.const 65536) (global.get $in_len)))
        (i32.store (i32.const 20) (i32.sub (i32.const 65536) (global.get $in_len)))
        (br_if $eof (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
        (local.set $n (i32.load (i32.const 24)))
        (br_if $eof (i32.eqz (local.get $n)))
        (global.set $in_len (i32.add (global.get $in_len) (local.get $n)))
        (br $more)))
    ;; 2. config.path and config.min_rows
    (local.set $at (call $find (i32.const 2048) (i32.const 8)))
    (if (i32.lt_s (local.get $at) (i32.const 0))
      (then
        (call $write_all (i32.const 2) (i32.const 2464) (i32.const 36))
        (call $proc_exit (i32.const 2))))
    (block $end
      (loop $copy
        (br_if $end (i32.ge_u (i32.add (local.get $at) (local.get $plen)) (global.get $in_len)))
        (local.set $c (i32.load8_u (i32.add (i32.const 65536) (i32.add (local.get $at) (local.get $plen)))))
        (br_if $end (i32.eq (local.get $c) (i32.const 34)))
        (br_if $end (i32.ge_u (local.get $plen) (i32.const 1000)))
        (i32.store8 (i32.add (i32.const 1024) (local.get $plen)) (local.get $c))
        (local.set $plen (i32.add (local.get $plen) (i32.const 1)))
        (br $copy)))
    (local.set $min (call $config_num (i32.const 2064) (i32.const 11) (i64.const 1)))
    (local.set $max_empty (call $config_num (i32.const 2656) (i32.const 12) (i64.const 0)))
    ;; 3. open the file in the work folder (preopen fd 3): read rights only
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 1024) (local.get $plen)
          (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 48))
      (then
        (call $write_all (i32.const 2) (i32.const 2512) (i32.const 25))
        (call $write_all (i32.const 2) (i32.const 1024) (local.get $plen))
        (call $write_all (i32.const 2) (i32.const 2608) (i32.const 20))
        (call $proc_exit (i32.const 2))))
    (local.set $fd (i32.load (i32.const 48)))
    ;; 4. count, chunk by chunk
    (block $eof
      (loop $chunk
        (i32.store (i32.const 16) (i32.const 131072))
        (i32.store (i32.const 20) (i32.const 65536))
        (br_if $eof (call $fd_read (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24)))
        (local.set $n (i32.load (i32.const 24)))
        (br_if $eof (i32.eqz (local.get $n)))
        (local.set $i (i32.const 0))
        (loop $byte
          (local.set $c (i32.load8_u (i32.add (i32.const 131072) (local.get $i))))
          (if (i32.eq (local.get $c) (i32.const 10))
            (then (if (global.get $line_len) (then (call $end_row))))
            (else (if (i32.eq (local.get $c) (i32.const 44))
              (then
                (call $end_field)
                (global.set $line_len (i32.add (global.get $line_len) (i32.const 1))))
              (else (if (i32.ne (local.get $c) (i32.const 13))
                (then
                  (global.set $field_len (i32.add (global.get $field_len) (i32.const 1)))
                  (global.set $line_len (i32.add (global.get $line_len) (i32.const 1)))))))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $byte (i32.lt_u (local.get $i) (local.get $n))))
        (br $chunk)))
    (if (global.get $line_len) (then (call $end_row)))
    (drop (call $fd_close (local.get $fd)))
    ;; 5. the summary, on stderr
    (call $emit (i32.const 2384) (i32.const 13))
    (call $emit_num (global.get $rows))
    (call $emit (i32.const 2400) (i32.const 8))
    (call $emit_num (i64.extend_i32_u (global.get $cols)))
    (call $emit (i32.const 2416) (i32.const 10))
    (call $emit_num (global.get $empties))
    (call $emit (i32.const 2432) (i32.const 15))
    (call $emit_num (global.get $ragged))
    (call $emit (i32.const 2448) (i32.const 13))
    (call $flush (i32.const 2))
    ;; 6. the result, on stdout
    (call $emit (i32.const 2080) (i32.const 19))
    (call $emit_num (global.get $rows))
    (call $emit (i32.const 2112) (i32.const 11))
    (call $emit_num (i64.extend_i32_u (global.get $cols)))
    (call $emit (i32.const 2128) (i32.const 16))
    (call $emit_num (global.get $empties))
    (call $emit (i32.const 2160) (i32.const 15))
    (call $emit_num (global.get $ragged))
    (local.set $bad
      (i32.or (i32.or (i64.ne (global.get $ragged) (i64.const 0)) (i64.gt_u (global.get $empties) (local.get $max_empty)))
              (i64.lt_u (global.get $rows) (local.get $min))))
    (if (local.get $bad)
      (then
        (call $emit (i32.const 2192) (i32.const 31))
        (call $emit (i32.const 2384) (i32.const 12))
        (if (i64.ne (global.get $ragged) (i64.const 0))
          (then
            (call $emit (i32.const 2396) (i32.const 1))
            (call $emit_num (global.get $ragged))
            (call $emit (i32.const 2240) (i32.const 44))))
        (if (i64.gt_u (global.get $empties) (local.get $max_empty))
          (then
            (call $emit (i32.const 2396) (i32.const 1))
            (call $emit_num (global.get $empties))
            (call $emit (i32.const 2304) (i32.const 18))))
        (if (i64.lt_u (global.get $rows) (local.get $min))
          (then
            (call $emit (i32.const 2396) (i32.const 1))
            (call $emit_num (global.get $rows))
            (call $emit (i32.const 2336) (i32.const 32))
            (call $emit_num (local.get $min))))
        (i32.store8 (i32.const 100) (i32.const 34))
        (call $emit (i32.const 100) (i32.const 1)))
      (else
        (i32.store8 (i32.const 100) (i32.const 125))
        (call $emit (i32.const 100) (i32.const 1))))
    (i32.store8 (i32.const 100) (i32.const 125))
    (i32.store8 (i32.const 101) (i32.const 10))
    (call $emit (i32.const 100) (i32.const 2))
    (call $flush (i32.const 1))))
