;; A plugin that traps.
(module
  (memory (export "memory") 1)
  (func (export "_start") unreachable))
