/* Diagnostic only (bench/check_cpu.sh, NODELAY_SHIM=1): an LD_PRELOAD shim that sets
 * TCP_NODELAY on every socket the process accepts. It lets the benchmark show what
 * oidc-authz would cost if its gRPC listener set TCP_NODELAY (src/server.rs builds its
 * TcpIncoming with `TcpIncoming::from(listener)`, which leaves Nagle on), without touching
 * src/. Build: cc -shared -fPIC -O2 -o nodelay_shim.so nodelay_shim.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static void nodelay(int fd) {
    if (fd >= 0) {
        int one = 1;
        /* Fails harmlessly on non-TCP sockets. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    int c = real(fd, addr, len, flags);
    nodelay(c);
    return c;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
    static int (*real)(int, struct sockaddr *, socklen_t *);
    if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
    int c = real(fd, addr, len);
    nodelay(c);
    return c;
}
