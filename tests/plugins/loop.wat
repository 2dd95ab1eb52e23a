;; A plugin that never ends: the engine must stop it at the step's deadline.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $forever (br $forever))))
