/* WASI conformance from C (wasi-libc): prints one line per call with its
 * result or errno, so runtimes can be compared line by line.
 * Usage: conformance DIR, where DIR holds hello.txt ("hello\n") and sub/n.txt. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *dir;
static char buf[4096];

static const char *p(const char *rel) {
    static char paths[8][512];
    static int next;
    char *out = paths[next++ % 8];
    snprintf(out, 512, "%s/%s", dir, rel);
    return out;
}

static void result(const char *label, long r) {
    if (r < 0) printf("%s: err errno %d\n", label, errno);
    else printf("%s: ok %ld\n", label, r);
}

static long read_file(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int saved = errno;
    close(fd);
    errno = saved;
    if (n >= 0) buf[n] = 0;
    return n;
}

static long write_file(const char *path, const char *text, int flags) {
    int fd = open(path, O_WRONLY | flags, 0644);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n;
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void list(const char *label, const char *path) {
    DIR *d = opendir(path);
    if (!d) { result(label, -1); return; }
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        names[n] = malloc(strlen(e->d_name) + 8);
        sprintf(names[n], "%s:%s", e->d_name, e->d_type == DT_DIR ? "dir" : "file");
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof names[0], cmp);
    printf("%s: ok", label);
    for (int i = 0; i < n; i++) { printf(" %s", names[i]); free(names[i]); }
    printf("\n");
}

int main(int argc, char **argv) {
    dir = argc > 1 ? argv[1] : "/data";
    struct stat st;

    result("read hello", read_file(p("hello.txt"))); printf("  = %s", buf);
    result("read missing", read_file(p("missing.txt")));
    result("read dir", read_file(p("sub")));
    list("list", dir);
    result("stat size", stat(p("hello.txt"), &st) == 0 ? (long)st.st_size : -1);
    result("stat is dir", stat(p("sub"), &st) == 0 ? S_ISDIR(st.st_mode) : -1);
    result("mkdir", mkdir(p("made"), 0755));
    result("mkdir again", mkdir(p("made"), 0755));
    result("write", write_file(p("made/a.txt"), "abc", O_CREAT | O_TRUNC));
    result("append", write_file(p("made/a.txt"), "def", O_APPEND));
    result("exclusive", write_file(p("made/a.txt"), "x", O_CREAT | O_EXCL));
    result("read back", read_file(p("made/a.txt"))); printf("  = %s\n", buf);

    int fd = open(p("seek.bin"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    result("open rw", fd);
    result("write 10", write(fd, "0123456789", 10));
    result("lseek set", lseek(fd, 3, SEEK_SET));
    result("read 4", read(fd, buf, 4));
    result("lseek end", lseek(fd, -2, SEEK_END));
    result("lseek cur", lseek(fd, 0, SEEK_CUR));
    result("lseek negative", lseek(fd, -100, SEEK_CUR));
    result("pwrite past end", pwrite(fd, "X", 1, 12));
    result("ftruncate", ftruncate(fd, 14));
    result("fstat size", fstat(fd, &st) == 0 ? (long)st.st_size : -1);
    result("pread", pread(fd, buf, 8, 8));
    close(fd);
    result("close twice", close(fd));

    result("rename", rename(p("made/a.txt"), p("made/b.txt")));
    result("rename missing", rename(p("made/a.txt"), p("made/c.txt")));
    result("rmdir non-empty", rmdir(p("made")));
    result("unlink dir", unlink(p("made")));
    result("rmdir file", rmdir(p("made/b.txt")));
    result("unlink", unlink(p("made/b.txt")));
    result("unlink missing", unlink(p("made/b.txt")));
    result("rmdir", rmdir(p("made")));
    result("escape", read_file(p("../outside.txt")));
    result("through a file", read_file(p("hello.txt/x")));
    list("list after", dir);

    /* No descriptor is a socket: an open one is ENOTSOCK, a closed one EBADF. */
    int file = open(p("hello.txt"), O_RDONLY);
    result("shutdown file", shutdown(file, SHUT_RDWR));
    result("shutdown stdout", shutdown(1, SHUT_WR));
    close(file);
    result("shutdown closed", shutdown(file, SHUT_RDWR));
    result("recv file", recv(0, buf, 4, 0));
    result("send closed", send(file, "x", 1, 0));

    struct timespec t0, t1, nap = {0, 20 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    nanosleep(&nap, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long waited = (t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec);
    printf("slept enough: %d\n", waited >= 20 * 1000 * 1000);
    printf("done\n");
    return 0;
}
