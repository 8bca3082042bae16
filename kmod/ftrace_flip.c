// SPDX-License-Identifier: GPL-2.0
/*
 * ftrace_flip: test only, never loaded outside the lab. The smallest thing
 * that patches a function's ftrace site the way NTA's redirects do, and
 * nothing else: for telling a fault in the kernel's text patching (or in
 * the emulator running it) from one of NTA's.
 *
 *   echo COUNT FLAGS > /sys/kernel/debug/ftrace_flip/run
 *	COUNT times: register a do-nothing ftrace_ops on the target function
 *	(module parameter target=, default __netdev_alloc_frag_align, which
 *	e1000 calls for every receive buffer), then unregister it. FLAGS 1:
 *	the ops is SAVE_REGS|IPMODIFY|RECURSION, as NTA's are (the callback
 *	still changes nothing); 0: a plain ops. Reading the file gives the
 *	last run's count.
 *
 * Each registration and each removal rewrites the target's call site with
 * text_poke_bp() (int3, then the rest, then the first byte), as rmmod nta
 * does for NTA's own redirects.
 */

#include <linux/debugfs.h>
#include <linux/ftrace.h>
#include <linux/kstrtox.h>
#include <linux/module.h>
#include <linux/string.h>

static char *target = "__netdev_alloc_frag_align";
module_param(target, charp, 0444);
MODULE_PARM_DESC(target, "the function whose ftrace site is flipped");

static struct dentry *ftrace_flip_dir;
static DEFINE_MUTEX(ftrace_flip_lock);
static unsigned long ftrace_flip_done;

static void notrace ftrace_flip_nop(unsigned long ip, unsigned long parent_ip,
				    struct ftrace_ops *ops, struct ftrace_regs *fregs)
{
}

static struct ftrace_ops ftrace_flip_ops = {
	.func = ftrace_flip_nop,
};

/* One register + unregister of an ops with @flags on the target. */
static int ftrace_flip_once(unsigned long flags)
{
	char name[KSYM_NAME_LEN];
	int err;

	ftrace_flip_ops.flags = flags;
	strscpy(name, target, sizeof(name));
	err = ftrace_set_filter(&ftrace_flip_ops, name, strlen(name), 1);
	if (err)
		return err;
	err = register_ftrace_function(&ftrace_flip_ops);
	if (!err)
		err = unregister_ftrace_function(&ftrace_flip_ops);
	ftrace_set_filter(&ftrace_flip_ops, NULL, 0, 1);
	return err;
}

static ssize_t ftrace_flip_write(struct file *file, const char __user *buf, size_t len,
				 loff_t *ppos)
{
	unsigned long count, i, flags = 0;
	char text[32], *space;
	int err = 0;

	if (!len || len >= sizeof(text) || copy_from_user(text, buf, len))
		return -EINVAL;
	text[len] = '\0';
	space = strchr(strim(text), ' ');
	if (space) {
		*space++ = '\0';
		if (kstrtoul(space, 0, &flags) || flags > 1)
			return -EINVAL;
	}
	if (kstrtoul(text, 0, &count))
		return -EINVAL;
	flags = flags ? FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_IPMODIFY |
			FTRACE_OPS_FL_RECURSION : 0;
	mutex_lock(&ftrace_flip_lock);
	ftrace_flip_done = 0;
	for (i = 0; i < count && !err; i++) {
		err = ftrace_flip_once(flags);
		if (!err)
			ftrace_flip_done++;
		/* On the console: how far a run got, should the kernel die on the way. */
		pr_info("ftrace_flip: %s %lu of %lu\n", target, ftrace_flip_done, count);
		cond_resched();
	}
	mutex_unlock(&ftrace_flip_lock);
	return err ?: len;
}

static ssize_t ftrace_flip_read(struct file *file, char __user *buf, size_t len, loff_t *ppos)
{
	char text[32];
	int n = scnprintf(text, sizeof(text), "%lu\n", READ_ONCE(ftrace_flip_done));

	return simple_read_from_buffer(buf, len, ppos, text, n);
}

static const struct file_operations ftrace_flip_fops = {
	.owner = THIS_MODULE,
	.write = ftrace_flip_write,
	.read = ftrace_flip_read,
	.llseek = noop_llseek,
};

static int __init ftrace_flip_init(void)
{
	ftrace_flip_dir = debugfs_create_dir("ftrace_flip", NULL);
	debugfs_create_file("run", 0600, ftrace_flip_dir, NULL, &ftrace_flip_fops);
	return 0;
}

static void __exit ftrace_flip_exit(void)
{
	debugfs_remove_recursive(ftrace_flip_dir);
}

module_init(ftrace_flip_init);
module_exit(ftrace_flip_exit);
MODULE_LICENSE("GPL");
MODULE_AUTHOR("ntalab");
MODULE_DESCRIPTION("ftrace_flip: register and unregister a do-nothing ftrace ops, for the lab");
