/*
 * mod_tsgi supervisor, in the Apache parent: the per-start secret, one
 * listening Unix socket per daemon (kept across graceful restarts), forking
 * and exec'ing the Node workers (identity, environment, fds 3-5 of the
 * worker contract in ../PROTOCOL.md), restarting them with the shared
 * back-off (tsgi_policy.h), and retiring them when their generation ends.
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
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
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
    int retired;
    int crashes;          /* deaths in a row, for the back-off (tsgi_policy.h) */
    int status_fd;        /* read end of the worker's status pipe (fd 5 there), -1 when none */
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
    /* Registered on pconf, never on a longer-lived pool: worker_maintenance
     * lives in this DSO, which Apache unloads and reloads on every restart. */
    apr_proc_other_child_register(&w->proc, worker_maintenance, w, NULL, w->d->pconf);
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "mod_tsgi: daemon %s: started worker #%d, pid %d", w->d->name,
                 w->index, (int)pid);
    return APR_SUCCESS;
}

/* What a worker that could not start wrote on its status pipe (one line),
 * or "" when it wrote nothing; the pipe is closed either way. */
static const char *status_reason(tsgi_worker *w, char *buf, size_t size)
{
    ssize_t n = -1;
    if (w->status_fd >= 0) {
        n = read(w->status_fd, buf, size - 1);
        close(w->status_fd);
        w->status_fd = -1;
    }
    if (n <= 0)
        n = 0;
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return buf;
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
    const char *said;
    char why[512];
    said = status_reason(w, why, sizeof(why));
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

/* The MPM's other-child callback: a worker died (or was lost). */
static void worker_maintenance(int reason, void *data, int status)
{
    tsgi_worker *w = data;
    server_rec *s = ap_server_conf;
    int mpm_state = AP_MPMQ_STOPPING;
    const unsigned char *secret;
    apr_interval_time_t delay;
    char why[512];
    /* APR_OC_REASON_RESTART needs nothing: retire_workers (a pconf cleanup)
     * already told this generation to drain. */
    if (getpid() != w->parent_pid || (reason != APR_OC_REASON_DEATH && reason != APR_OC_REASON_LOST))
        return;
    apr_proc_other_child_unregister(w);
    ap_mpm_query(AP_MPMQ_MPM_STATE, &mpm_state);
    if (w->retired || mpm_state == AP_MPMQ_STOPPING) {
        status_reason(w, why, sizeof(why));
        if (w->retired)
            retired_forget(w->process, w);
        return;
    }
    delay = restart_delay(w, status);
    secret = tsgi_secret_get(w->d->s->process);
    if (!secret || spawn_worker(w, s, secret, delay) != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s, "mod_tsgi: daemon %s: cannot restart worker #%d",
                     w->d->name, w->index);
}

typedef struct {
    tsgi_daemon *d;
    pid_t parent_pid;
} tsgi_generation;

/* pconf cleanup: the generation that spawned these workers is over (graceful
 * restart or stop): SIGTERM lets them finish in-flight work and exit. */
static apr_status_t retire_workers(void *data)
{
    tsgi_generation *g = data;
    int i;
    if (getpid() != g->parent_pid)
        return APR_SUCCESS;
    for (i = 0; i < g->d->processes; i++) {
        tsgi_worker *w = g->d->workers[i];
        if (w && !w->retired) {
            w->retired = 1;
            w->d = NULL;
            kill(w->proc.pid, SIGTERM);
            retired_add(w->process, w);
        }
    }
    return APR_SUCCESS;
}

/* pconf cleanup registered before the daemons' retire_workers, so it runs
 * after all of them: on stop (not on graceful restart) wait for the workers
 * to drain, and SIGKILL those still there graceful-timeout + 2 s later. */
static apr_status_t reap_on_exit(void *data)
{
    tsgi_registry *reg = data;
    apr_time_t deadline = apr_time_now();
    int i, j, left;
    if (ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_EXITING)
        return APR_SUCCESS;
    for (i = 0; i < reg->list->nelts; i++) {
        tsgi_daemon *d = APR_ARRAY_IDX(reg->list, i, tsgi_daemon *);
        if (apr_time_now() + d->graceful_timeout + apr_time_from_sec(2) > deadline)
            deadline = apr_time_now() + d->graceful_timeout + apr_time_from_sec(2);
    }
    do {
        left = 0;
        for (i = 0; i < reg->list->nelts; i++) {
            tsgi_daemon *d = APR_ARRAY_IDX(reg->list, i, tsgi_daemon *);
            for (j = 0; d->workers && j < d->processes; j++) {
                tsgi_worker *w = d->workers[j];
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
