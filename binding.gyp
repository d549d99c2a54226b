{
  "targets": [
    {
      "target_name": "ctrexec_fifo",
      "sources": ["native/fifo.c", "native/mount.c"],
      "cflags": ["-O2", "-Wall"]
    }
  ]
}
