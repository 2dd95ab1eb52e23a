;; A plugin that allocates without bound: it must fail with a memory error.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $more
      (drop (memory.grow (i32.const 16)))
      (br $more))))
