"""Lexicon sentiment for Chinese and English comments: a score in [-1, 1], no model.

Comments that arrive without a rating or a sentiment still need a sign: negative ones feed
the user's negative state (streams.state.event_weight). This is a small, explainable,
dependency-free method, written by hand from general knowledge of how reviews are worded
(not fitted to any data set):

1. Split into sentences (。！？!?.；; and newlines) and clauses (，,、：:).
2. Tokenize: Chinese by forward maximum matching against the lexicon (so 不错 "not bad"
   wins over 不 + 错, 特别 "especially" over 别 "don't"); English as lowercase words.
3. A sentiment word scores its weight (±1, strong words ±1.5 to ±2), times
   - the intensifiers before it in the clause (很/非常/太/very/really…, softeners
     有点/稍微/slightly… below 1), and
   - −0.8 when a negator (不/没/没有/别/无/未/not/no/never/…n't) precedes it within three
     tokens of the same clause: "not good" is negative, "not bad" mildly positive.
4. After a contrast word (但是/可是/不过/却/but/however…) the rest of the sentence counts
   1.5x and what came before it 0.5x: "不错，但是太贵了" is negative.
5. score = (P − N) / (P + N + 1) over the summed positive (P) and negative (N) magnitudes:
   0 when no sentiment word is found, ±0.5 for one plain word, closer to ±1 the more
   evidence agrees.

Known limits: no sarcasm, no domain adaptation, unknown words count for nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Hit", "hits", "score"]


def _table(text: str, sign: float) -> dict[str, float]:
    """Whitespace-separated entries, `word` or `word:weight` (weight 1 by default)."""
    out: dict[str, float] = {}
    for entry in text.split():
        word, _, weight = entry.partition(":")
        out[word] = sign * (float(weight) if weight else 1.0)
    return out


_POSITIVE_ZH = _table(
    """
好 好看 好用 好吃 好听 好玩 好评:1.5 很好 挺好 不错 还不错 满意 喜欢 喜爱 热爱 爱 爱不释手:2
推荐 强烈推荐:2 值得 值 超值:1.5 划算 实惠 便宜 优惠 物美价廉:1.5 物超所值:1.5 性价比高:1.5
精彩:1.5 精美 精致 漂亮 美丽 美观 美 帅 可爱 舒服 舒适 方便 便捷 快捷 快 迅速 及时 准时
流畅 清晰 清楚 干净 整洁 安静 宽敞 明亮 新鲜 美味 香 正品 结实 耐用 稳定 可靠 靠谱 专业
耐心 热情 周到 贴心 细心 认真 负责 友好 礼貌 优秀 出色 完美:1.5 棒 很棒 赞 超赞:1.5 点赞
厉害 给力 优质 大气 上档次 经典 感动 感人 动人 温馨 温暖 开心 高兴 快乐 愉快 幸福 满足
惊喜:1.5 欣赏 佩服 受益 受益匪浅:1.5 收获 启发 有用 实用 有趣 有意思 生动 深刻 通俗易懂
深入浅出 易懂 全面 详细 丰富 充实 适合 合适 合身 舒心 放心 安心 信赖 信任 支持 感谢 谢谢
好书 好货 五星 满分:1.5 一流 顶级 完好 顺利 成功 进步 健康 安全 轻松 轻便 小巧 时尚 新颖
独特 精辟 透彻 精心 用心 清新 优美 流利 自然 真实 难得 不愧 回购 没问题 没有问题 无敌 好好
太好了:1.5 好极了:1.5 值得一看 值得一读 值得购买 物有所值 齐全 实在 划得来 省心 省事 强大
高效 灵敏 准确 正宗 地道 喜欢上 爱上 心动 享受 过瘾 震撼 引人入胜:1.5 耐人寻味 发人深省
理想 优点 亮点 好处 乐趣 欢乐 好笑 搞笑 幽默 真诚 诚信 正规 踏实 扎实 精湛 高超 巧妙 聪明
智慧 美好 完善 贴切 恰当 到位 神速 惊艳:1.5 必备 必读 必看 喜出望外:2 赏心悦目:1.5 好喝
便利 有效 管用 耐看 百看不厌:2 难忘 期待 能用 好读 易用 好操作 速度快 发货快 态度好 服务好
质量好 效果好 物流快 包装好 信誉好 值这个价 一分钱一分货 好感 出彩 亮眼 推荐购买 很值
""",
    1.0,
)

_NEGATIVE_ZH = _table(
    """
差 很差 太差 差劲:1.5 不好 不行 失望:1.5 很失望:1.5 后悔:1.5 垃圾:2 糟糕:1.5 烂 破 坏
损坏 破损 问题 毛病 缺陷 故障 瑕疵 缺点 不足 遗憾 可惜 无聊 乏味 枯燥 没意思 难看 难用 难吃
难听 难受 难过 痛苦 郁闷 生气 愤怒 气愤 恶心:1.5 讨厌 反感 厌恶 烦 麻烦 不满 不爽 不值
不值得 浪费 白费 坑 坑人:1.5 坑爹:1.5 骗 骗子:2 欺骗 假 假货:2 山寨 盗版 劣质:1.5 次品 粗糙
简陋 贵 昂贵 慢 拖拉 延迟 卡顿 死机 闪退 发热 发烫 异味 臭 脏 乱 吵 噪音 旧 掉色 起球 褪色
变形 漏 漏水 缺页 错 错误 错别字 不符 模糊 冷漠 敷衍 恶劣:1.5 差评:1.5 投诉 退货 退款 换货
上当 受骗 忽悠 无语 崩溃 晕 倒霉 失败 一般:0.6 凑合:0.6 勉强 平庸 肤浅 空洞 牵强 啰嗦 拖沓
弱 不如 不方便 不舒服 不满意:1.5 不喜欢 不推荐:1.5 别买:2 千万别:2 不值钱 担心 可怕 危险 伤心
悲伤 痛 累 辛苦 无奈 尴尬 差强人意 名不副实 大失所望:2 上当受骗:2 太贵 贵了 慢了 不怎么样:1.5
不咋地 不靠谱 不专业 不耐烦 态度差:1.5 服务差:1.5 质量差:1.5 有问题 出问题 不清楚 看不懂
少了 缺 漏发 发错 破了 坏了 烂了 差了 糊弄 应付 偷工减料 以次充好 虚假 夸大 误导 浪费钱:1.5
没用 无用 无效 令人失望:1.5 不过如此:1.5 一般般 平淡 平平 老套 俗套 狗血 烂尾 看不下去:1.5
读不下去:1.5 浪费时间:1.5 失误 漏洞 粗制滥造:2 胡说 胡扯 胡编 乱七八糟:1.5 一塌糊涂:2
不知所云:1.5 莫名其妙 不伦不类 华而不实 空洞无物 言之无物 用不了 没法用 不能用 不好用 退了
退掉 不会再 再也不 小心 上当了 慎重 慎买 太慢 很慢 速度慢 发货慢 质量不好 效果不好 不理想
不值这个价 贵了点 有点贵 偏贵 不好看 难懂 看不懂 不适合 不实用 不建议 烂透 垃圾书 差差
""",
    -1.0,
)

_NEGATORS_ZH = _table(
    """
不 没 没有 别 无 未 非 毫不 并不 并没有 从不 从没 从未 绝不 决不 不是 不会 不能 不要 不太:0.5
不够 不怎么 不算 木有 莫 勿 甭
""",
    1.0,
)

_INTENSIFIERS_ZH = _table(
    """
很:1.3 非常:1.8 太:1.6 特别:1.6 十分:1.6 极:2 极其:2 极为:2 超:1.6 超级:1.8 最:1.8 真:1.3
真的:1.3 挺:1.2 相当:1.5 比较:1.1 蛮:1.2 更:1.3 更加:1.4 越来越:1.3 格外:1.5 尤其:1.4
实在:1.4 简直:1.6 完全:1.5 绝对:1.6 无比:1.8 异常:1.6 有点:0.7 有些:0.7 有一点:0.6 稍微:0.6
稍:0.6 略:0.7 略微:0.6 还算:0.8 还:0.9
""",
    1.0,
)

_CONTRAST_ZH = frozenset(["但是", "但", "可是", "不过", "然而", "却", "只是", "可惜的是"])

# Words that start with a negator or sentiment character but are neither; longest match
# picks them first so that 不过 is not 不 + 过 and 好像 is not 好 + 像.
_NEUTRAL_ZH = frozenset(
    _table(
        """
不仅 不但 不断 不少 不同 不管 不论 不久 不得不 不一定 不止 不然 不如说 不禁 差不多 差点
别人 别的 区别 分别 告别 级别 类别 性别 特别是 没想到 不知道 无论 无所谓 好像 好几 好多 好些
好久 只好 正好 刚好 恰好 爱好 无非 非得 莫名 并且 好在 好不容易 不好意思 问题是 快递 快要
""",
        0.0,
    )
)

_POSITIVE_EN = _table(
    """
good great excellent:1.5 amazing:1.5 awesome:1.5 fantastic:1.5 wonderful:1.5 love:1.5 loved:1.5
loves:1.5 lovely like liked likes nice best better perfect:1.5 beautiful brilliant:1.5 enjoy
enjoyed enjoyable fun happy glad pleased satisfied recommend recommended worth helpful useful
easy fast quick smooth reliable comfortable clean fresh delicious tasty favorite favourite
impressive impressed superb:1.5 outstanding:1.5 incredible:1.5 solid friendly kind cool gorgeous
elegant stunning fine decent pleasant charming exciting interesting engaging thrilling
masterpiece:2 classic clear accurate affordable bargain durable sturdy gem win winner thank
thanks appreciate appreciated exceptional:1.5 flawless:1.5 delightful:1.5 beautifully
well-made intuitive responsive polite generous fabulous:1.5 terrific:1.5 marvelous:1.5
recommendable must-see must-read hilarious touching moving inspiring insightful favourite
""",
    1.0,
)

_NEGATIVE_EN = _table(
    """
bad terrible:1.5 awful:1.5 horrible:1.5 poor worst:2 worse hate:1.5 hated:1.5 hates dislike
disappointing:1.5 disappointed:1.5 disappointment:1.5 boring bored dull waste:1.5 wasted useless
broken broke slow expensive overpriced annoying annoyed angry sad ugly problem problems issue
issues bug buggy crash crashes crashed fail failed fails failure fake scam:2 noisy dirty rude
confusing confused mediocre weak flimsy unreliable uncomfortable painful mess messy wrong error
errors defective faulty stupid ridiculous pathetic:1.5 lame meh regret sucks:1.5 suck sucked
garbage:2 trash:2 junk:1.5 nightmare:1.5 unfortunately lacking lacks missing late delayed
overrated unhappy frustrating frustrated refund avoid:1.5 cheaply ripoff rip-off misleading
unusable lousy shoddy horrid dreadful:1.5 disgusting:1.5 nasty worthless:1.5 complaint
""",
    -1.0,
)

_NEGATORS_EN = _table(
    """
not no never nothing none neither nor hardly barely without cannot cant dont doesnt didnt isnt
wasnt arent werent wont wouldnt shouldnt couldnt havent hasnt hadnt aint
""",
    1.0,
)

_INTENSIFIERS_EN = _table(
    """
very:1.5 really:1.4 so:1.3 extremely:2 too:1.3 super:1.6 absolutely:1.8 totally:1.6 quite:1.2
pretty:1.2 incredibly:1.9 highly:1.5 most:1.5 truly:1.5 completely:1.6 utterly:1.8 especially:1.4
slightly:0.6 somewhat:0.7 kinda:0.7 barely:0.5 fairly:0.9
""",
    1.0,
)

_CONTRAST_EN = frozenset(["but", "however", "though", "yet", "although"])

_NEGATION_FACTOR = -0.8  # "not good" is weaker than "bad"
_NEGATION_REACH = 3  # tokens after a negator that it can still flip
_DANGLING = 0.5  # a negator with no known word to flip ("没收到", "doesn't work")
_BEFORE_CONTRAST, _AFTER_CONTRAST = 0.5, 1.5

_SENTENCES = re.compile(r"[。！？!?；;\n]+|\.(?:\s+|$)")
_CLAUSES = re.compile(r"[，,、：:（）()“”\"…~～]+")
_TOKENS = re.compile(r"[a-z]+(?:['’-][a-z]+)*|[\u3400-\u9fff]+|\S")

_ZH_KINDS: dict[str, tuple[str, float]] = {}
for _kind, _table_ in (
    ("neu", dict.fromkeys(_NEUTRAL_ZH, 0.0)),
    ("int", _INTENSIFIERS_ZH),
    ("neg", _NEGATORS_ZH),
    ("sen", _NEGATIVE_ZH),
    ("sen", _POSITIVE_ZH),
):
    for _word, _weight in _table_.items():
        _ZH_KINDS[_word] = (_kind, _weight)
for _word in _CONTRAST_ZH:
    _ZH_KINDS[_word] = ("con", 1.0)
_ZH_LONGEST = max(map(len, _ZH_KINDS))


@dataclass(frozen=True)
class Hit:
    """One sentiment word found in a text, with its final contribution."""

    word: str
    value: float


def _english(token: str) -> tuple[str, float] | None:
    word = token.replace("’", "'")
    if word.endswith("n't") or word.replace("'", "") in _NEGATORS_EN:
        return ("neg", 1.0)
    if word in _CONTRAST_EN:
        return ("con", 1.0)
    if word in _INTENSIFIERS_EN:
        return ("int", _INTENSIFIERS_EN[word])
    for form in (word, word[:-1] if word.endswith("s") else None):
        if form and form in _POSITIVE_EN:
            return ("sen", _POSITIVE_EN[form])
        if form and form in _NEGATIVE_EN:
            return ("sen", _NEGATIVE_EN[form])
    return None


def _chinese(run: str) -> list[tuple[str, str, float]]:
    """Forward maximum matching; unknown characters become neutral one-char tokens."""
    out, i = [], 0
    while i < len(run):
        for size in range(min(_ZH_LONGEST, len(run) - i), 0, -1):
            piece = run[i : i + size]
            found = _ZH_KINDS.get(piece)
            if found is not None:
                out.append((piece, *found))
                i += size
                break
        else:
            out.append((run[i], "neu", 0.0))
            i += 1
    return out


def _tokens(clause: str) -> list[tuple[str, str, float]]:
    out = []
    for token in _TOKENS.findall(clause):
        if "\u3400" <= token[0] <= "\u9fff":
            out.extend(_chinese(token))
        else:
            kind = _english(token)
            out.append((token, *kind) if kind else (token, "neu", 0.0))
    return out


def hits(text: str) -> list[Hit]:
    """The sentiment words of `text` with their contributions (for explanations).

    >>> [(h.word, round(h.value, 2)) for h in hits("质量不错，但是太贵了")]
    [('不错', 0.5), ('太贵', -1.5)]
    >>> [(h.word, round(h.value, 2)) for h in hits("This is not good at all")]
    [('good', -0.8)]
    """
    found: list[Hit] = []
    for sentence in _SENTENCES.split(text.lower()):
        start = len(found)
        after_contrast = False
        for clause in _CLAUSES.split(sentence):
            negation, since_negation, boost = 1.0, _NEGATION_REACH + 1, 1.0
            negator = ""
            for word, kind, weight in _tokens(clause):
                since_negation += 1
                if since_negation == _NEGATION_REACH + 1 and negator:
                    found.append(Hit(negator, -_DANGLING * negation))  # negated nothing known
                    negator = ""
                if kind == "neg":
                    if negator and since_negation <= _NEGATION_REACH:
                        found.append(Hit(negator, -_DANGLING * negation))
                    negation, since_negation, negator = weight, 0, word
                elif kind == "int":
                    boost *= weight
                elif kind == "con":
                    for j in range(start, len(found)):  # what came before matters less
                        found[j] = Hit(found[j].word, found[j].value * _BEFORE_CONTRAST)
                    after_contrast, negation, boost = True, 1.0, 1.0
                elif kind == "sen":
                    value = weight * boost
                    if since_negation <= _NEGATION_REACH:
                        value *= _NEGATION_FACTOR * negation
                        since_negation, negator = _NEGATION_REACH + 1, ""
                    if after_contrast:
                        value *= _AFTER_CONTRAST
                    found.append(Hit(word, value))
                    boost = 1.0
            if negator:
                found.append(Hit(negator, -_DANGLING * negation))
    return found


def score(text: str) -> float:
    """Sentiment of a Chinese or English text in [-1, 1]; 0 when nothing is recognised.

    >>> round(score("这本书非常好看，强烈推荐！"), 2)
    0.79
    >>> score("质量太差了，很失望") < 0 < score("not bad at all, I liked it")
    True
    >>> score("今天下午三点开会")
    0.0
    """
    positive = negative = 0.0
    for hit in hits(text):
        if hit.value > 0:
            positive += hit.value
        else:
            negative -= hit.value
    return (positive - negative) / (positive + negative + 1.0)
