// SPDX-License-Identifier: GPL-2.0
/* The smallest module the build stage is tested with. */
#include <linux/module.h>

static int __init ntatest_init(void)
{
	pr_info("ntatest: version 1 loaded\n");
	return 0;
}

static void __exit ntatest_exit(void)
{
}

module_init(ntatest_init);
module_exit(ntatest_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("1");
MODULE_DESCRIPTION("ntalab build-stage test module");
