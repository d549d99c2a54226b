{
  "targets": [
    {
      "target_name": "ctrexec_fifo",
      "sources": ["native/fifo.c"],
      "cflags": ["-O2", "-Wall"]
    }
  ]
}
