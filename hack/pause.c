/* The pod sandbox's pause process for the local kubelet (image quantramp/pause, built by
 * hack/build-image.sh with gcc -static -Os): holds the pod's namespaces, reaps orphans
 * (SIGCHLD), exits 0 on SIGTERM/SIGINT. Does what registry.k8s.io/pause does, offline. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }
static void on_chld(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) { puts("quantramp pause 3.10"); return 0; }
  if (getpid() != 1) fputs("warning: pause should be the first process\n", stderr);
  struct sigaction term = {.sa_handler = on_term}, chld = {.sa_handler = on_chld, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGTERM, &term, NULL) < 0 || sigaction(SIGINT, &term, NULL) < 0 ||
      sigaction(SIGCHLD, &chld, NULL) < 0) return 1;
  for (;;) pause();
}
