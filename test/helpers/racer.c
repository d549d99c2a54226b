// A hostile container's half of the host-safety race tests (test/integration/host-safety.test.ts): swaps a
// directory and a symlink (pointing at a host path outside the container's root) back and forth with
// renameat2(RENAME_EXCHANGE), as fast as it can, while ctrexec works on the same tree from the host. Built
// statically by the test's set-up (cc -static) so it runs on any rootfs. Bounded: it stops after a number of
// swaps or once a stop file exists, whichever comes first, and leaves the directory under its own name.
//
//   racer pair A B STOP MAX   exchange A and B
//   racer seq DIR STOP MAX    exchange DIR/<i> and DIR/l<i> for i = 0, 1, ... (the host makes the links, a
//                             ctrexec run makes DIR/<i> as its working directory; the racer follows along)
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

static int exchange(const char *a, const char *b) {
  return (int)syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE);
}

static int is_symlink(const char *p) {
  struct stat st;
  return lstat(p, &st) == 0 && S_ISLNK(st.st_mode);
}

static int stopped(long i, const char *stop) {
  struct stat st;
  return (i & 1023) == 0 && stat(stop, &st) == 0;
}

int main(int argc, char **argv) {
  int seq = argc == 5 && argv[1][0] == 's';
  if (!seq && !(argc == 6 && argv[1][0] == 'p')) {
    fprintf(stderr, "usage: racer pair A B STOP MAX | racer seq DIR STOP MAX\n");
    return 2;
  }
  long swaps = 0, i;
  // The host waits for this line before it starts its side of the race.
  printf("racing\n");
  fflush(stdout);
  if (!seq) {
    const char *a = argv[2], *b = argv[3], *stop = argv[4];
    long max = atol(argv[5]);
    for (i = 0; i < max && !stopped(i, stop); i++)
      if (exchange(a, b) == 0) swaps++;
    if (is_symlink(a)) exchange(a, b); // leave A as the directory it was
  } else {
    const char *dir = argv[2], *stop = argv[3];
    long max = atol(argv[4]);
    char a[4096], b[4096], a2[4096], b2[4096];
    unsigned cur = 0;
    for (i = 0; i < max && !stopped(i, stop); i++) {
      snprintf(a, sizeof a, "%s/%u", dir, cur);
      snprintf(b, sizeof b, "%s/l%u", dir, cur);
      snprintf(a2, sizeof a2, "%s/%u", dir, cur + 1);
      snprintf(b2, sizeof b2, "%s/l%u", dir, cur + 1);
      if (exchange(a, b) == 0) swaps++;
      if (exchange(a2, b2) == 0) {
        swaps++;
        cur++;
      }
    }
  }
  printf("%ld swaps\n", swaps);
  return 0;
}
