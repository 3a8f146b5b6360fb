/*
 * mod_tsgi supervisor, in the Apache parent: the per-start secret, one
 * listening Unix socket per daemon (kept across graceful restarts), forking
 * and exec'ing the Node workers (identity, environment, fds 3-5 of the
 * worker contract in ../PROTOCOL.md), restarting them with the shared
 * back-off (tsgi_policy.h), and retiring them when their generation ends:
 * on a graceful restart only once the next generation's workers are all
 * ready (the reload gate: gate_check, gate_fail, gate_open; PROTOCOL.md).
 */
#include "mod_tsgi.h"

#include "http_core.h"
#include "http_main.h"
#include "ap_mpm.h"
#include "mpm_common.h"
#include "unixd.h"

#include "apr_strings.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* One worker process slot; lives in its own subpool of the process pool so
 * a retired worker outlives the configuration generation that made it. */
struct tsgi_worker {
    apr_pool_t *pool;
    apr_proc_t proc;
    tsgi_daemon *d;       /* only valid while !retired */
    process_rec *process;
    int index;
    int retired;          /* its generation ended (it may still serve: see told) */
    int told;             /* SIGTERM sent: it drains and exits */
    int ready;            /* said "ready" on its status pipe: init succeeded, it accepts */
    int parked;           /* of a reload that failed: not respawned while the previous generation serves */
    int crashes;          /* deaths in a row, for the back-off (tsgi_policy.h) */
    int status_fd;        /* read end of the worker's status pipe (fd 5 there), -1 when none */
    char said[512];       /* the line it wrote there when it could not start, "" when none */
    const char *daemon;   /* its daemon's name (the next generation's daemon of that name takes over) */
    apr_time_t started;   /* when node was exec'd (after any back-off delay) */
    pid_t parent_pid;
    char **argv;
    char **envp;
    const char *cwd;
    const char *node;
    int listen_fd;
    uid_t uid;
    gid_t gid;
    const char *user_name;
    const char *home;
    gid_t *groups;        /* supplementary groups, resolved before fork */
    int ngroups;
};

/* Per-start secret, shared by every generation of one Apache run so old
 * children and new workers agree during a graceful restart. */
const unsigned char *tsgi_secret_get(process_rec *proc)
{
    void *v = NULL;
    unsigned char *sec;
    apr_pool_userdata_get(&v, "mod_tsgi.secret", proc->pool);
    if (v)
        return v;
    sec = apr_palloc(proc->pool, TSGI_SECRET_LEN);
    if (apr_generate_random_bytes(sec, TSGI_SECRET_LEN) != APR_SUCCESS)
        return NULL;
    apr_pool_userdata_set(sec, "mod_tsgi.secret", apr_pool_cleanup_null, proc->pool);
    return sec;
}

typedef struct {
    const char *path;
    const char *dir;
    const char *ops_dir; /* made when a generation first has metrics= */
    pid_t owner;
    int fd;
} tsgi_listener;

/* Removes a directory of plain files (the workers' metrics files). */
static void remove_flat_dir(const char *dir)
{
    DIR *dp = opendir(dir);
    struct dirent *e;
    char path[PATH_MAX];
    if (dp) {
        while ((e = readdir(dp)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
                snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) < (int)sizeof(path))
                unlink(path);
        closedir(dp);
    }
    rmdir(dir);
}

static apr_status_t listener_cleanup(void *data)
{
    tsgi_listener *l = data;
    /* Children inherit the pools: only the parent removes files. */
    if (getpid() != l->owner || l->fd < 0)
        return APR_SUCCESS;
    close(l->fd);
    l->fd = -1;
    unlink(l->path);
    rmdir(l->dir);
    if (l->ops_dir)
        remove_flat_dir(l->ops_dir);
    return APR_SUCCESS;
}

/* pconf cleanup: a graceful restart keeps the listener for the next
 * generation; only a stop (Apache exiting) removes it. Apache does not
 * destroy the process pool on exit, so this is where stop is seen. */
static apr_status_t listener_exit_cleanup(void *data)
{
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_EXITING)
        return listener_cleanup(data);
    return APR_SUCCESS;
}

/* The socket's directory: 0700 and owned by the user Apache children run
 * as, so only they (and root) may connect; workers never need the path, they
 * inherit the fd. */
static apr_status_t socket_dir(server_rec *s, const char *dir, uid_t owner)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s, "mod_tsgi: cannot create socket directory %s", dir);
        return errno;
    }
    if (chmod(dir, 0700) != 0 || (geteuid() == 0 && chown(dir, owner, (gid_t)-1) != 0)) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s, "mod_tsgi: cannot set up socket directory %s", dir);
        return errno;
    }
    return APR_SUCCESS;
}

/* A listening Unix socket at path (0600, owned by `owner`; the caller checked
 * that the path fits sun_path); the fd in *out. */
static apr_status_t socket_listen(server_rec *s, const char *path, uid_t owner, int *out)
{
    struct sockaddr_un sa;
    int fd, err;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);
    unlink(path); /* stale socket of a crashed run with a reused pid */
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || chmod(path, 0600) != 0 ||
        (geteuid() == 0 && chown(path, owner, (gid_t)-1) != 0) || listen(fd, 4096) != 0) {
        err = errno;
        ap_log_error(APLOG_MARK, APLOG_CRIT, err, s, "mod_tsgi: cannot listen on %s", path);
        close(fd);
        return err;
    }
    *out = fd;
    return APR_SUCCESS;
}

/* The daemon's listening socket: made once per Apache start (process pool),
 * reused by every generation so a graceful restart never refuses a connect. */
static apr_status_t listener_get(server_rec *s, tsgi_daemon *d, uid_t worker_uid)
{
    apr_pool_t *pp = s->process->pool;
    const char *key = apr_pstrcat(s->process->pconf, "mod_tsgi.listener.", d->name, NULL);
    const char *base = d->socket_dir ? d->socket_dir : ap_runtime_dir_relative(s->process->pconf, "");
    const char *dir, *path;
    tsgi_listener *l = NULL;
    uid_t owner = geteuid() == 0 ? ap_unixd_config.user_id : geteuid();
    struct sockaddr_un sa;
    apr_status_t rv;
    int fd = -1;
    apr_pool_userdata_get((void **)&l, key, pp);
    dir = apr_psprintf(pp, "%s/tsgi.%ld", base, (long)getpid());
    path = apr_pstrcat(pp, dir, "/", d->name, ".sock", NULL);
    if (!(l && l->fd >= 0 && !strcmp(l->path, path))) {
        if (strlen(path) >= sizeof(sa.sun_path)) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "mod_tsgi: socket path too long: %s (set socket-dir=)", path);
            return APR_ENAMETOOLONG;
        }
        if ((rv = socket_dir(s, dir, owner)) != APR_SUCCESS || (rv = socket_listen(s, path, owner, &fd)) != APR_SUCCESS)
            return rv;
        l = apr_pcalloc(pp, sizeof(*l));
        l->path = path;
        l->dir = dir;
        l->owner = getpid();
        l->fd = fd;
        apr_pool_userdata_set(l, apr_pstrdup(pp, key), apr_pool_cleanup_null, pp);
    }
    /* No cleanup on the process pool: this DSO is unloaded with pconf, so
     * a function pointer there would dangle at exit. Stop is handled by
     * listener_exit_cleanup on pconf. */
    apr_pool_cleanup_register(s->process->pconf, l, listener_exit_cleanup, apr_pool_cleanup_null);
    d->socket_path = l->path;
    d->listen_fd = l->fd;
    /* The workers' shared metrics (TSGI_OPS_DIR): beside the socket's directory, which they may not enter;
     * 0700 and theirs; kept across graceful restarts so the counters go on. */
    if (d->metrics_path && !l->ops_dir) {
        const char *ops = apr_psprintf(pp, "%s.%s.ops", dir, d->name);
        if ((mkdir(ops, 0700) != 0 && errno != EEXIST) || chmod(ops, 0700) != 0 ||
            (geteuid() == 0 && chown(ops, worker_uid, (gid_t)-1) != 0))
            ap_log_error(APLOG_MARK, APLOG_WARNING, errno, s, "mod_tsgi: daemon %s: cannot make %s: each worker's "
                         "metrics will count that worker alone", d->name, ops);
        else
            l->ops_dir = ops;
    }
    d->ops_dir = d->metrics_path ? l->ops_dir : NULL;
    return APR_SUCCESS;
}

static void close_other_fds(int from)
{
    long max = sysconf(_SC_OPEN_MAX);
    int fd;
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)from, ~0U, 0) == 0)
        return;
#endif
    if (max < 0 || max > 65536)
        max = 65536;
    for (fd = from; fd < max; fd++)
        close(fd);
}

/* In the forked child: fd 0 /dev/null, 1 and 2 the error log, and the
 * contract's fd 3 = listener, 4 = secret, 5 = status; nothing else open. */
static int child_fds(tsgi_worker *w, int secret_fd, int status_fd)
{
    int devnull = open("/dev/null", O_RDONLY);
    int listen_fd;
    if (devnull >= 0)
        dup2(devnull, 0);
    dup2(2, 1); /* stdout and stderr both to Apache's error log */
    /* Move them out of the way first so no dup2 clobbers another. */
    listen_fd = fcntl(w->listen_fd, F_DUPFD, 10);
    secret_fd = fcntl(secret_fd, F_DUPFD, 10);
    status_fd = fcntl(status_fd, F_DUPFD, 10);
    if (listen_fd < 0 || secret_fd < 0 || status_fd < 0 || dup2(listen_fd, 3) < 0 || dup2(secret_fd, 4) < 0 ||
        dup2(status_fd, 5) < 0)
        return -1;
    close_other_fds(6);
    return 0;
}

/* In the forked child: no signal blocked or caught, as after a fresh exec of a shell. */
static void child_signals(void)
{
    sigset_t none;
    int sig;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
}

/* The back-off happens in the forked child, so the MPM parent never sleeps;
 * a SIGTERM (stop, graceful restart) ends the wait and the child. */
static void child_wait(apr_interval_time_t delay)
{
    struct timespec ts;
    if (delay <= 0)
        return;
    ts.tv_sec = (time_t)(delay / APR_USEC_PER_SEC);
    ts.tv_nsec = (long)(delay % APR_USEC_PER_SEC) * 1000;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* In the forked child: become the worker user (never root). */
static int child_identity(tsgi_worker *w)
{
    if (geteuid() == 0) {
        /* setgroups, not initgroups: no NSS lookups between fork and exec. */
        if (setgid(w->gid) != 0 || setgroups((size_t)w->ngroups, w->groups) != 0 || setuid(w->uid) != 0) {
            fprintf(stderr, "mod_tsgi: cannot switch to uid %ld gid %ld: %s\n", (long)w->uid, (long)w->gid,
                    strerror(errno));
            return -1;
        }
    }
    if (getuid() == 0 || geteuid() == 0) {
        fprintf(stderr, "mod_tsgi: refusing to run a worker as root\n");
        return -1;
    }
    return 0;
}

/* In the forked child: wait out the back-off, become the worker user and
 * exec node. Never returns. */
static void exec_worker(tsgi_worker *w, int secret_fd, int status_fd, apr_interval_time_t delay)
{
    setsid(); /* a terminal's Ctrl-C goes to Apache, which stops us cleanly */
    if (child_fds(w, secret_fd, status_fd) != 0)
        _exit(126);
    child_signals();
    child_wait(delay);
    if (child_identity(w) != 0)
        _exit(126);
    if (chdir(w->cwd) != 0 && chdir("/") != 0)
        _exit(126);
    execve(w->node, w->argv, w->envp);
    fprintf(stderr, "mod_tsgi: cannot exec %s: %s\n", w->node, strerror(errno));
    _exit(127);
}

/* Workers of past generations that are still draining. Plain data in the
 * process pool: each new generation re-registers them as other children
 * (on its own pconf) so their exit is reaped quietly. */
static apr_array_header_t *retired_list(process_rec *proc)
{
    void *v = NULL;
    apr_pool_userdata_get(&v, "mod_tsgi.retired", proc->pool);
    if (!v) {
        v = apr_array_make(proc->pool, 8, sizeof(tsgi_worker *));
        apr_pool_userdata_set(v, "mod_tsgi.retired", apr_pool_cleanup_null, proc->pool);
    }
    return v;
}

static void retired_add(process_rec *proc, tsgi_worker *w)
{
    apr_array_header_t *list = retired_list(proc);
    int i;
    for (i = 0; i < list->nelts; i++) {
        if (!APR_ARRAY_IDX(list, i, tsgi_worker *)) {
            APR_ARRAY_IDX(list, i, tsgi_worker *) = w;
            return;
        }
    }
    APR_ARRAY_PUSH(list, tsgi_worker *) = w;
}

static void retired_forget(process_rec *proc, tsgi_worker *w)
{
    apr_array_header_t *list = retired_list(proc);
    int i;
    for (i = 0; i < list->nelts; i++)
        if (APR_ARRAY_IDX(list, i, tsgi_worker *) == w)
            APR_ARRAY_IDX(list, i, tsgi_worker *) = NULL;
    apr_pool_destroy(w->pool);
}

static void worker_maintenance(int reason, void *data, int status);

/* The secret pipe (inherited by the worker) and the status pipe (its write end only). */
static apr_status_t make_pipes(int secretfd[2], int statusfd[2])
{
    int err;
    if (pipe(secretfd) != 0)
        return errno;
    if (pipe2(statusfd, O_CLOEXEC) == 0)
        return APR_SUCCESS;
    err = errno;
    close(secretfd[0]);
    close(secretfd[1]);
    return err;
}

static void close_pipes(int secretfd[2], int statusfd[2])
{
    close(secretfd[0]);
    close(secretfd[1]);
    close(statusfd[0]);
    close(statusfd[1]);
}

/* Forks the worker of slot w (it waits `delay` before exec'ing node) and hands it the secret. */
static apr_status_t spawn_worker(tsgi_worker *w, server_rec *s, const unsigned char *secret, apr_interval_time_t delay)
{
    int secretfd[2], statusfd[2];
    char hex[TSGI_SECRET_LEN * 2 + 1];
    apr_status_t rv;
    pid_t pid;
    ssize_t n;
    if ((rv = make_pipes(secretfd, statusfd)) != APR_SUCCESS)
        return rv;
    pid = fork();
    if (pid < 0) {
        rv = errno;
        close_pipes(secretfd, statusfd);
        return rv;
    }
    if (pid == 0) {
        close(secretfd[1]);
        close(statusfd[0]);
        exec_worker(w, secretfd[0], statusfd[1], delay);
    }
    close(secretfd[0]);
    close(statusfd[1]);
    fcntl(statusfd[0], F_SETFL, O_NONBLOCK);
    w->status_fd = statusfd[0];
    ap_bin2hex(secret, TSGI_SECRET_LEN, hex);
    /* 64 bytes fit the pipe buffer: never blocks, even before the exec. */
    n = write(secretfd[1], hex, TSGI_SECRET_LEN * 2);
    close(secretfd[1]);
    if (n != TSGI_SECRET_LEN * 2)
        ap_log_error(APLOG_MARK, APLOG_ERR, errno, s, "mod_tsgi: cannot pass the secret to worker %d", (int)pid);
    w->proc.pid = pid;
    w->proc.in = w->proc.out = w->proc.err = NULL;
    w->started = apr_time_now() + delay;
    w->ready = w->told = w->parked = 0;
    w->said[0] = '\0';
    /* Registered on pconf, never on a longer-lived pool: worker_maintenance
     * lives in this DSO, which Apache unloads and reloads on every restart. */
    apr_proc_other_child_register(&w->proc, worker_maintenance, w, NULL, w->d->pconf);
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "mod_tsgi: daemon %s: started worker #%d, pid %d", w->d->name,
                 w->index, (int)pid);
    return APR_SUCCESS;
}

/*
 * Reads the worker's status pipe if it said something: "ready" (init ran, it
 * accepts) marks it ready; any other line is why it could not start (kept in
 * w->said). The pipe is closed once it said something or reached EOF; returns
 * whether it is closed.
 */
static int status_read(tsgi_worker *w)
{
    char buf[sizeof(w->said)];
    ssize_t n;
    if (w->status_fd < 0)
        return 1;
    do {
        n = read(w->status_fd, buf, sizeof(buf) - 1);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN)
        return 0;
    close(w->status_fd);
    w->status_fd = -1;
    if (n <= 0)
        return 1;
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    if (!strcmp(buf, "ready"))
        w->ready = 1;
    else
        apr_cpystrn(w->said, buf, sizeof(w->said));
    return 1;
}

/* At a worker's death: what it wrote on its status pipe when it could not
 * start, or "" when nothing (the pipe is closed either way). */
static const char *status_reason(tsgi_worker *w)
{
    status_read(w);
    if (w->status_fd >= 0) {
        close(w->status_fd); /* a child of the worker still holds the write end */
        w->status_fd = -1;
    }
    return w->said;
}

/*
 * Logs why a worker of this generation died and returns how long its
 * replacement waits: the shared back-off (tsgi_policy.h) for a crash or a
 * failed start, none for a clean exit (max-requests, a drain), which also
 * starts the count again. The MPM passes the exit code or the signal number,
 * already decoded and without saying which.
 */
static apr_interval_time_t restart_delay(tsgi_worker *w, int status)
{
    server_rec *s = ap_server_conf;
    apr_time_t now = apr_time_now();
    apr_interval_time_t delay;
    const char *said = status_reason(w);
    if (status == 0) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "mod_tsgi: daemon %s: worker #%d (pid %d) exited cleanly; "
                     "restarting", w->d->name, w->index, (int)w->proc.pid);
        w->crashes = 0;
        return 0;
    }
    delay = (apr_interval_time_t)tsgi_backoff_next(&w->crashes, (int64_t)w->started, (int64_t)now);
    if (status == TSGI_EXIT_STARTUP || now - w->started < TSGI_QUICK_DEATH)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "mod_tsgi: daemon %s: worker #%d (pid %d) could not start: %s; "
                     "next attempt in %g s", w->d->name, w->index, (int)w->proc.pid,
                     *said ? said : apr_psprintf(w->pool, "it ended with exit code or signal %d", status),
                     (double)delay / APR_USEC_PER_SEC);
    else
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "mod_tsgi: daemon %s: worker #%d (pid %d) ended with exit code "
                     "or signal %d; restarting in %g s", w->d->name, w->index, (int)w->proc.pid, status,
                     (double)delay / APR_USEC_PER_SEC);
    return delay;
}

/* Tells a worker to drain and exit (SIGTERM), once. */
static void tell(tsgi_worker *w)
{
    if (!w->told && w->proc.pid > 0)
        kill(w->proc.pid, SIGTERM);
    w->told = 1;
}

/* How many workers of past generations still serve in place of daemon d's (its
 * reload gate keeps them: same name, same listening socket); told, they drain now. */
static int kept_workers(process_rec *proc, tsgi_daemon *d, int drain)
{
    apr_array_header_t *list = retired_list(proc);
    int i, n = 0;
    for (i = 0; i < list->nelts; i++) {
        tsgi_worker *w = APR_ARRAY_IDX(list, i, tsgi_worker *);
        if (!w || w->told || strcmp(w->daemon, d->name) || w->listen_fd != d->listen_fd)
            continue;
        if (drain)
            tell(w);
        n++;
    }
    return n;
}

/* This generation's daemon that a kept worker of a past one stands in for, if any. */
static tsgi_daemon *daemon_of(tsgi_worker *w)
{
    tsgi_registry *reg = tsgi_registry_get(w->process->pconf);
    int i;
    for (i = 0; i < reg->list->nelts; i++) {
        tsgi_daemon *d = APR_ARRAY_IDX(reg->list, i, tsgi_daemon *);
        if (d->workers && !strcmp(d->name, w->daemon) && d->listen_fd == w->listen_fd)
            return d;
    }
    return NULL;
}

static void watcher_maintenance(int reason, void *data, int status);

/*
 * The watcher: a forked copy of the parent that only waits (poll) for one of
 * the starting workers to write on or close its status pipe, then exits. Its
 * death is what the MPM tells the parent about within a second (a readiness
 * alone reaches no hook: the monitor hook runs every 10 s); the parent reads
 * the pipes itself (gate_check) and starts another watcher while some are left.
 */
static void watcher_start(tsgi_daemon *d)
{
    struct pollfd *fds = malloc(sizeof(*fds) * (size_t)d->processes);
    int i, n = 0;
    pid_t pid;
    if (!fds)
        return;
    for (i = 0; i < d->processes; i++) {
        tsgi_worker *w = d->workers[i];
        if (w && !w->ready && w->status_fd >= 0 && w->proc.pid > 0) {
            fds[n].fd = w->status_fd;
            fds[n].events = POLLIN;
            fds[n].revents = 0;
            n++;
        }
    }
    pid = n ? fork() : -1;
    if (pid == 0) {
        child_signals();
        while (poll(fds, (nfds_t)n, -1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    free(fds);
    if (pid < 0) {
        if (n)
            ap_log_error(APLOG_MARK, APLOG_WARNING, errno, d->s, "mod_tsgi: daemon %s: cannot fork the readiness "
                         "watcher; the previous workers drain at the next worker death or restart", d->name);
        return;
    }
    d->watcher.pid = pid;
    d->watcher.in = d->watcher.out = d->watcher.err = NULL;
    d->watcher_parent = getpid();
    apr_proc_other_child_register(&d->watcher, watcher_maintenance, d, NULL, d->pconf);
}

/* Ends the watcher; `registered`: its other-child record is still there (not in a pconf cleanup). */
static void watcher_stop(tsgi_daemon *d, int registered)
{
    if (d->watcher.pid <= 0 || d->watcher_parent != getpid())
        return;
    if (registered)
        apr_proc_other_child_unregister(d);
    kill(d->watcher.pid, SIGKILL);
    while (waitpid(d->watcher.pid, NULL, 0) < 0 && errno == EINTR)
        ;
    d->watcher.pid = 0;
}

/* While the gate is pending: once every new worker said ready, the previous generation drains. */
static void gate_check(tsgi_daemon *d)
{
    int i, kept;
    if (d->gate != TSGI_GATE_PENDING)
        return;
    for (i = 0; i < d->processes; i++) {
        status_read(d->workers[i]);
        if (!d->workers[i]->ready)
            return;
    }
    d->gate = TSGI_GATE_LIVE;
    watcher_stop(d, 1);
    /* The line first: it must not come after the old workers' ends. */
    kept = kept_workers(d->s->process, d, 0);
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, d->s, "mod_tsgi: daemon %s: reloaded: %d new worker%s ready; the previous "
                 "%d drain%s", d->name, d->processes, d->processes > 1 ? "s" : "", kept, kept == 1 ? "s" : "");
    kept_workers(d->s->process, d, 1);
}

/*
 * A new worker ended before it was ready while the previous generation still
 * serves: the reload failed. One line says why; the other new workers are
 * told to go and none is respawned (parked) while the previous ones serve,
 * as the Node hosts' pool keeps its old workers; the next graceful restart
 * tries again.
 */
static void gate_fail(tsgi_daemon *d, tsgi_worker *w, int status)
{
    const char *said = status_reason(w);
    char why[64];
    int i;
    d->gate = TSGI_GATE_FAILED;
    watcher_stop(d, 1);
    if (!*said) {
        snprintf(why, sizeof(why), "a new worker ended with exit code or signal %d", status);
        said = why;
    }
    ap_log_error(APLOG_MARK, APLOG_ERR, 0, d->s, "mod_tsgi: daemon %s: reload failed: %s; still serving the previous "
                 "handler", d->name, said);
    w->told = 1; /* it is gone (and reaped) */
    for (i = 0; i < d->processes; i++) {
        d->workers[i]->parked = 1;
        tell(d->workers[i]);
    }
}

/* The previous generation is gone (its kept workers all ended): this one is
 * supervised as usual again; parked slots start with the back-off. */
static void gate_open(tsgi_daemon *d)
{
    const unsigned char *secret = tsgi_secret_get(d->s->process);
    int i, was = d->gate;
    d->gate = TSGI_GATE_LIVE;
    watcher_stop(d, 1);
    if (was != TSGI_GATE_FAILED)
        return;
    ap_log_error(APLOG_MARK, APLOG_WARNING, 0, d->s, "mod_tsgi: daemon %s: the previous handler's workers have all "
                 "ended; starting this generation's again", d->name);
    for (i = 0; i < d->processes; i++) {
        tsgi_worker *w = d->workers[i];
        w->parked = 0;
        if (w->proc.pid > 0)
            continue; /* still draining: its death respawns it */
        if (!secret || spawn_worker(w, d->s, secret, (apr_interval_time_t)tsgi_backoff_next(&w->crashes,
                                    (int64_t)w->started, (int64_t)apr_time_now())) != APR_SUCCESS)
            ap_log_error(APLOG_MARK, APLOG_CRIT, errno, d->s, "mod_tsgi: daemon %s: cannot restart worker #%d",
                         d->name, w->index);
    }
}

static void watcher_maintenance(int reason, void *data, int status)
{
    tsgi_daemon *d = data;
    if (getpid() != d->watcher_parent || (reason != APR_OC_REASON_DEATH && reason != APR_OC_REASON_LOST))
        return;
    apr_proc_other_child_unregister(d);
    d->watcher.pid = 0;
    gate_check(d);
    if (d->gate == TSGI_GATE_PENDING)
        watcher_start(d);
}

/* A worker of a past generation ended: when it was the last one standing in
 * for this generation's daemon, that daemon's gate opens. */
static void retired_ended(tsgi_worker *w)
{
    tsgi_daemon *d = !w->told ? daemon_of(w) : NULL;
    status_reason(w);
    retired_forget(w->process, w);
    if (d && d->gate != TSGI_GATE_LIVE && kept_workers(d->s->process, d, 0) == 0)
        gate_open(d);
}

/* The MPM's other-child callback: a worker died (or was lost). */
static void worker_maintenance(int reason, void *data, int status)
{
    tsgi_worker *w = data;
    tsgi_daemon *d = w->d;
    server_rec *s = ap_server_conf;
    int mpm_state = AP_MPMQ_STOPPING;
    const unsigned char *secret;
    apr_interval_time_t delay;
    /* APR_OC_REASON_RESTART needs nothing: retire_workers (a pconf cleanup)
     * already decided which of this generation's workers drain. */
    if (getpid() != w->parent_pid || (reason != APR_OC_REASON_DEATH && reason != APR_OC_REASON_LOST))
        return;
    apr_proc_other_child_unregister(w);
    ap_mpm_query(AP_MPMQ_MPM_STATE, &mpm_state);
    if (w->retired) {
        retired_ended(w);
        return;
    }
    if (mpm_state == AP_MPMQ_STOPPING) {
        status_reason(w);
        return;
    }
    status_read(w);
    if (d->gate == TSGI_GATE_PENDING && !w->ready)
        gate_fail(d, w, status);
    if (w->parked) {
        status_reason(w);
        w->proc.pid = 0;
        return;
    }
    delay = restart_delay(w, status);
    secret = tsgi_secret_get(d->s->process);
    if (!secret || spawn_worker(w, s, secret, delay) != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s, "mod_tsgi: daemon %s: cannot restart worker #%d",
                     d->name, w->index);
    else if (d->gate == TSGI_GATE_PENDING) {
        /* A new worker that was ready crashed: watch its replacement too. */
        watcher_stop(d, 1);
        watcher_start(d);
    }
}

typedef struct {
    tsgi_daemon *d;
    pid_t parent_pid;
} tsgi_generation;

/*
 * pconf cleanup: the generation that spawned these workers is over (graceful
 * restart or stop). On a stop every worker drains (SIGTERM: in-flight work
 * finishes, then it exits). On a restart the gate: a live generation's ready
 * workers keep serving until the next generation's are ready (gate_check);
 * the others drain now, and workers kept from before stay kept.
 */
static apr_status_t retire_workers(void *data)
{
    tsgi_generation *g = data;
    tsgi_daemon *d = g->d;
    int exiting = ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_EXITING;
    apr_array_header_t *list;
    int i;
    if (getpid() != g->parent_pid)
        return APR_SUCCESS;
    watcher_stop(d, 0);
    for (i = 0; i < d->processes; i++) {
        tsgi_worker *w = d->workers[i];
        if (!w || w->retired)
            continue;
        w->retired = 1;
        w->d = NULL;
        if (w->proc.pid <= 0) {
            d->workers[i] = NULL;
            apr_pool_destroy(w->pool);
            continue;
        }
        status_read(w);
        if (exiting || d->gate != TSGI_GATE_LIVE || !w->ready)
            tell(w);
        retired_add(w->process, w);
    }
    if (exiting) {
        list = retired_list(d->s->process);
        for (i = 0; i < list->nelts; i++)
            if (APR_ARRAY_IDX(list, i, tsgi_worker *))
                tell(APR_ARRAY_IDX(list, i, tsgi_worker *));
    }
    return APR_SUCCESS;
}

/* pconf cleanup registered before the daemons' retire_workers, so it runs
 * after all of them (every worker is in the retired list then): on stop (not
 * on graceful restart) wait for the workers to drain, and SIGKILL those still
 * there graceful-timeout + 2 s later. */
static apr_status_t reap_on_exit(void *data)
{
    tsgi_registry *reg = data;
    apr_array_header_t *list;
    apr_time_t deadline = apr_time_now();
    int i, left;
    if (ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_EXITING || !reg->list->nelts)
        return APR_SUCCESS;
    list = retired_list(APR_ARRAY_IDX(reg->list, 0, tsgi_daemon *)->s->process);
    for (i = 0; i < reg->list->nelts; i++) {
        tsgi_daemon *d = APR_ARRAY_IDX(reg->list, i, tsgi_daemon *);
        if (apr_time_now() + d->graceful_timeout + apr_time_from_sec(2) > deadline)
            deadline = apr_time_now() + d->graceful_timeout + apr_time_from_sec(2);
    }
    do {
        left = 0;
        for (i = 0; i < list->nelts; i++) {
            tsgi_worker *w = APR_ARRAY_IDX(list, i, tsgi_worker *);
            if (!w || w->proc.pid <= 0 || w->parent_pid != getpid())
                continue;
            if (waitpid(w->proc.pid, NULL, WNOHANG) != 0) {
                w->proc.pid = -1; /* exited (or not our child any more) */
                continue;
            }
            if (apr_time_now() >= deadline) {
                kill(w->proc.pid, SIGKILL);
                waitpid(w->proc.pid, NULL, 0);
                w->proc.pid = -1;
                continue;
            }
            left++;
        }
        if (left)
            apr_sleep(apr_time_from_msec(20));
    } while (left);
    return APR_SUCCESS;
}

/* Whether the environment entry e ("NAME=value") is the variable name. */
static int env_is(const char *e, const char *name)
{
    size_t n = strlen(name);
    return !strncmp(e, name, n) && e[n] == '=';
}

/* Whether Apache's variable e reaches the workers: all but the identity and
 * mod_tsgi's own (TSGI_*), or with clear-env only PATH and the env= names. */
static int env_kept(const tsgi_daemon *d, const char *e)
{
    int i;
    if (!strncmp(e, "TSGI_", 5) || env_is(e, "HOME") || env_is(e, "USER") || env_is(e, "LOGNAME") || env_is(e, "PWD"))
        return 0;
    if (!d->clear_env)
        return 1;
    if (env_is(e, "PATH"))
        return 1;
    for (i = 0; i < d->env_keep->nelts; i++)
        if (env_is(e, APR_ARRAY_IDX(d->env_keep, i, const char *)))
            return 1;
    return 0;
}

/*
 * A worker's environment: Apache's (see env_kept), the worker user's HOME,
 * USER and LOGNAME as `setpriv --reset-env` or a login sets them, PWD = its
 * working directory, and the TSGI_* contract (PROTOCOL.md).
 */
static char **build_env(apr_pool_t *p, tsgi_daemon *d, tsgi_worker *w)
{
    extern char **environ;
    apr_array_header_t *env = apr_array_make(p, 32, sizeof(char *));
    char **e;
    int path = 0;
    for (e = environ; *e; e++) {
        if (env_kept(d, *e)) {
            APR_ARRAY_PUSH(env, char *) = *e;
            path |= env_is(*e, "PATH");
        }
    }
    if (!path && d->clear_env)
        APR_ARRAY_PUSH(env, char *) = "PATH=/usr/local/bin:/usr/bin:/bin";
    APR_ARRAY_PUSH(env, char *) = apr_pstrcat(p, "HOME=", w->home, NULL);
    APR_ARRAY_PUSH(env, char *) = apr_pstrcat(p, "USER=", w->user_name, NULL);
    APR_ARRAY_PUSH(env, char *) = apr_pstrcat(p, "LOGNAME=", w->user_name, NULL);
    APR_ARRAY_PUSH(env, char *) = apr_pstrcat(p, "PWD=", w->cwd, NULL);
    APR_ARRAY_PUSH(env, char *) = apr_pstrcat(p, "TSGI_HANDLER=", d->handler, NULL);
    APR_ARRAY_PUSH(env, char *) = apr_pstrcat(p, "TSGI_DAEMON=", d->name, NULL);
    APR_ARRAY_PUSH(env, char *) = "TSGI_LISTEN_FD=3";
    APR_ARRAY_PUSH(env, char *) = "TSGI_SECRET_FD=4";
    APR_ARRAY_PUSH(env, char *) = "TSGI_STATUS_FD=5";
    APR_ARRAY_PUSH(env, char *) = apr_psprintf(p, "TSGI_WORKER_INDEX=%d", w->index);
    APR_ARRAY_PUSH(env, char *) = apr_psprintf(p, "TSGI_MAX_REQUESTS=%d", d->max_requests);
    APR_ARRAY_PUSH(env, char *) = apr_psprintf(p, "TSGI_MAX_INFLIGHT=%d", d->max_inflight);
    APR_ARRAY_PUSH(env, char *) = apr_psprintf(p, "TSGI_QUEUE_TIMEOUT=%g", (double)d->queue_timeout / APR_USEC_PER_SEC);
    APR_ARRAY_PUSH(env, char *) = apr_psprintf(p, "TSGI_REQUEST_TIMEOUT=%g",
                                              (double)d->request_timeout / APR_USEC_PER_SEC);
    APR_ARRAY_PUSH(env, char *) = apr_psprintf(p, "TSGI_GRACEFUL_TIMEOUT=%g",
                                              (double)d->graceful_timeout / APR_USEC_PER_SEC);
    APR_ARRAY_PUSH(env, char *) = apr_psprintf(p, "TSGI_MAX_BODY=%" APR_OFF_T_FMT, d->max_body);
    APR_ARRAY_PUSH(env, char *) = apr_psprintf(p, "TSGI_MAX_HEAP=%" APR_OFF_T_FMT, d->max_heap);
    if (d->health_path)
        APR_ARRAY_PUSH(env, char *) = apr_pstrcat(p, "TSGI_HEALTH=", d->health_path, NULL);
    if (d->metrics_path)
        APR_ARRAY_PUSH(env, char *) = apr_pstrcat(p, "TSGI_METRICS=", d->metrics_path, NULL);
    if (d->ops_dir)
        APR_ARRAY_PUSH(env, char *) = apr_pstrcat(p, "TSGI_OPS_DIR=", d->ops_dir, NULL);
    if (d->metrics_public)
        APR_ARRAY_PUSH(env, char *) = "TSGI_METRICS_PUBLIC=1";
    if (d->server_timing)
        APR_ARRAY_PUSH(env, char *) = "TSGI_SERVER_TIMING=1";
    APR_ARRAY_PUSH(env, char *) = NULL;
    return (char **)env->elts;
}

/* The worker user's name and home directory (its number and / without a passwd entry). */
static void resolve_identity(apr_pool_t *p, tsgi_worker *w)
{
    struct passwd *pw = getpwuid(w->uid);
    w->user_name = pw ? apr_pstrdup(p, pw->pw_name) : apr_psprintf(p, "%ld", (long)w->uid);
    w->home = pw && pw->pw_dir && *pw->pw_dir ? apr_pstrdup(p, pw->pw_dir) : "/";
}

/* The worker user's supplementary groups (like initgroups would set). */
static void resolve_groups(apr_pool_t *p, tsgi_worker *w)
{
    int n = 64;
    gid_t *g = apr_palloc(p, sizeof(gid_t) * n);
    if (getgrouplist(w->user_name, w->gid, g, &n) < 0) {
        g = apr_palloc(p, sizeof(gid_t) * (n > 0 ? n : 1));
        if (getgrouplist(w->user_name, w->gid, g, &n) < 0) {
            g[0] = w->gid;
            n = 1;
        }
    }
    w->groups = g;
    w->ngroups = n;
}

/* A worker slot: everything its fork needs, resolved now (no NSS lookups between fork and exec). */
static tsgi_worker *worker_new(server_rec *s, tsgi_daemon *d, int index, uid_t uid, gid_t gid)
{
    apr_pool_t *wp;
    tsgi_worker *w;
    char *cwd;
    apr_pool_create(&wp, s->process->pool);
    w = apr_pcalloc(wp, sizeof(*w));
    w->pool = wp;
    w->d = d;
    w->process = s->process;
    w->index = index;
    w->daemon = apr_pstrdup(wp, d->name);
    w->status_fd = -1;
    w->parent_pid = getpid();
    w->node = apr_pstrdup(wp, d->node);
    w->argv = apr_palloc(wp, 4 * sizeof(char *));
    w->argv[0] = apr_pstrdup(wp, d->node);
    /* Stack traces name the handler's own source lines (the bundle and
     * core's TypeScript loader carry inline source maps). */
    w->argv[1] = "--enable-source-maps";
    w->argv[2] = apr_pstrdup(wp, d->worker_js);
    w->argv[3] = NULL;
    cwd = ap_make_dirstr_parent(wp, d->handler);
    if (strlen(cwd) > 1 && cwd[strlen(cwd) - 1] == '/')
        cwd[strlen(cwd) - 1] = '\0'; /* no trailing slash: PWD as a shell writes it */
    w->cwd = cwd;
    w->listen_fd = d->listen_fd;
    w->uid = uid;
    w->gid = gid;
    resolve_identity(wp, w);
    resolve_groups(wp, w);
    w->envp = build_env(wp, d, w);
    return w;
}

/* The workers' identity: user=/group=, else Apache's User/Group (they may
 * come after TsgiDaemon in the file, so the defaults apply only now). */
static int worker_identity(server_rec *s, tsgi_daemon *d, uid_t *uid, gid_t *gid)
{
    *uid = geteuid();
    *gid = getegid();
    if (geteuid() == 0) {
        *uid = d->uid != (uid_t)-1 ? d->uid : ap_unixd_config.user_id;
        *gid = d->gid != (gid_t)-1 ? d->gid : ap_unixd_config.group_id;
    }
    if (*uid != 0)
        return OK;
    ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                 "mod_tsgi: daemon %s: refusing to run workers as root; set user= (and group=) "
                 "or Apache's User to an unprivileged account", d->name);
    return HTTP_INTERNAL_SERVER_ERROR;
}

/* Starts one daemon's workers for this generation; they retire with pconf. */
static int start_daemon(apr_pool_t *pconf, server_rec *s, tsgi_daemon *d, const unsigned char *secret)
{
    tsgi_generation *g;
    apr_finfo_t fi;
    uid_t uid;
    gid_t gid;
    int i;
    if (worker_identity(s, d, &uid, &gid) != OK)
        return HTTP_INTERNAL_SERVER_ERROR;
    if (apr_stat(&fi, d->worker_js, APR_FINFO_TYPE, pconf) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "mod_tsgi: daemon %s: worker script not found: %s (worker=)",
                     d->name, d->worker_js);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (listener_get(s, d, uid) != APR_SUCCESS)
        return HTTP_INTERNAL_SERVER_ERROR;
    d->pconf = pconf;
    d->workers = apr_pcalloc(pconf, sizeof(tsgi_worker *) * d->processes);
    for (i = 0; i < d->processes; i++) {
        d->workers[i] = worker_new(s, d, i, uid, gid);
        if (spawn_worker(d->workers[i], s, secret, 0) != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s, "mod_tsgi: daemon %s: cannot fork a worker", d->name);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    g = apr_palloc(pconf, sizeof(*g));
    g->d = d;
    g->parent_pid = getpid();
    apr_pool_cleanup_register(pconf, g, retire_workers, apr_pool_cleanup_null);
    /* A graceful restart: the previous workers serve until these are ready. */
    d->gate = kept_workers(s->process, d, 0) ? TSGI_GATE_PENDING : TSGI_GATE_LIVE;
    if (d->gate == TSGI_GATE_PENDING)
        watcher_start(d);
    return OK;
}

/* Re-registers still-draining workers of past generations with this
 * generation's pconf (and this load of the DSO's worker_maintenance). */
static void adopt_retired(apr_pool_t *pconf, process_rec *proc)
{
    apr_array_header_t *list = retired_list(proc);
    int i;
    for (i = 0; i < list->nelts; i++) {
        tsgi_worker *w = APR_ARRAY_IDX(list, i, tsgi_worker *);
        if (!w)
            continue;
        if (kill(w->proc.pid, 0) == 0 || errno == EPERM)
            apr_proc_other_child_register(&w->proc, worker_maintenance, w, NULL, pconf);
        else
            retired_forget(proc, w);
    }
}

/* Kept workers whose daemon this generation no longer has (or has on another socket) drain now. */
static void drain_orphans(process_rec *proc)
{
    apr_array_header_t *list = retired_list(proc);
    int i;
    for (i = 0; i < list->nelts; i++) {
        tsgi_worker *w = APR_ARRAY_IDX(list, i, tsgi_worker *);
        if (w && !w->told && !daemon_of(w))
            tell(w);
    }
}

/* post_config: start every daemon's workers (the second config pass only). */
int tsgi_supervisor_start(apr_pool_t *pconf, server_rec *s)
{
    tsgi_registry *reg = tsgi_registry_get(pconf);
    const unsigned char *secret;
    int i, rc;
    /* The first of Apache's two config passes only checks the config. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG || reg->list->nelts == 0)
        return OK;
    if (!(secret = tsgi_secret_get(s->process))) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "mod_tsgi: cannot generate the per-start secret");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    adopt_retired(pconf, s->process);
    apr_pool_cleanup_register(pconf, reg, reap_on_exit, apr_pool_cleanup_null);
    for (i = 0; i < reg->list->nelts; i++)
        if ((rc = start_daemon(pconf, s, APR_ARRAY_IDX(reg->list, i, tsgi_daemon *), secret)) != OK)
            return rc;
    drain_orphans(s->process);
    return OK;
}

/* In an Apache child: it never accepts, so it drops the inherited listener and the workers' status pipes. */
void tsgi_supervisor_child_init(tsgi_daemon *d)
{
    int j;
    if (d->listen_fd >= 0) {
        close(d->listen_fd);
        d->listen_fd = -1;
    }
    for (j = 0; d->workers && j < d->processes; j++) {
        if (d->workers[j] && d->workers[j]->status_fd >= 0) {
            close(d->workers[j]->status_fd);
            d->workers[j]->status_fd = -1;
        }
    }
}
