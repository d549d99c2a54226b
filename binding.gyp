{
  "targets": [
    {
      "target_name": "ctrexec_fifo",
      "sources": ["native/fifo.c", "native/mount.c", "native/safe-fs.c", "native/remove-tree.c", "native/idmap.c"],
      "cflags": ["-O2", "-Wall"]
    }
  ]
}
