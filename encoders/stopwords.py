"""Function words left out of word-level interests (English and Chinese).

Hand-picked rather than taken from stopwords-iso: its English list (1,298 words) also
drops content words such as "home", "world", "information" and "new", which are
exactly what a user's interests are made of.
"""

_ENGLISH = """
a about above after again against all am an and any are aren't as at be because been
before being below between both but by can can't cannot could couldn't did didn't do
does doesn't doing don't down during each few for from further had hadn't has hasn't
have haven't having he he'd he'll he's her here here's hers herself him himself his how
how's i i'd i'll i'm i've if in into is isn't it it's its itself just let's me more most
mustn't my myself no nor not of off on once only or other ought our ours ourselves out
over own same shan't she she'd she'll she's should shouldn't so some such than that
that's the their theirs them themselves then there there's these they they'd they'll
they're they've this those through to too under until up very was wasn't we we'd we'll
we're we've were weren't what what's when when's where where's which while who who's
whom why why's will with won't would wouldn't you you'd you'll you're you've your yours
yourself yourselves s t d ll m re ve also really much many get got
"""

_CHINESE = """
的 了 着 过 是 在 和 与 及 或 而 也 都 就 还 又 再 很 太 更 最 非常 特别 比较 有点 一些 一点 这 那
这个 那个 这些 那些 这样 那样 这里 那里 我 你 您 他 她 它 我们 你们 他们 她们 它们 自己 大家
吗 呢 吧 啊 呀 哦 嗯 哈 啦 嘛 之 其 此 被 把 给 让 对 从 向 到 以 于 为 为了 因为 所以 但是 但
可是 然后 如果 虽然 而且 并且 不过 只是 就是 还是 或者 一个 一种 个 些 没 没有 不 别 能 会 要
可以 应该 已经 正在 将 才 并 等 地 得 所 之后 之前 时候 什么 怎么 怎样 为什么 哪 哪里 多少
"""

STOPWORDS: frozenset[str] = frozenset(_ENGLISH.split()) | frozenset(_CHINESE.split())
