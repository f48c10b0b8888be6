/* Test support (test/vpp-pg.sh, PG_ONLINE_CPUS): lets VPP run more
   pinned workers than the host has cores. LD_PRELOADed into VPP, it maps
   each CPU VPP pins a thread to onto CPU (cpu % PG_REAL_CPUS), so the
   workers VPP places on cores that exist only in the CPU list it was
   shown are spread over the real ones instead of failing to pin (which
   stops VPP, vlib/threads.c start_workers). Without PG_REAL_CPUS it
   passes the call through unchanged. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <dlfcn.h>
#include <stdlib.h>
int
pthread_setaffinity_np (pthread_t t, size_t size, const cpu_set_t *set)
{
  static int (*real) (pthread_t, size_t, const cpu_set_t *);
  if (!real)
    real = dlsym (RTLD_NEXT, "pthread_setaffinity_np");
  const char *e = getenv ("PG_REAL_CPUS");
  long n = e ? atol (e) : 0;
  if (n <= 0)
    return real (t, size, set);
  cpu_set_t s;
  CPU_ZERO (&s);
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET_S (c, size, set))
      CPU_SET (c % n, &s);
  return real (t, sizeof s, &s);
}
