;; Not a plugin: a WASI reactor (a library), with no `_start`.
(module
  (memory (export "memory") 1)
  (func (export "_initialize")))
