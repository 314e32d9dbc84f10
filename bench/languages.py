"""Language detection (issue 18): how often ``detect_language`` names the language of a short
sentence, on a held-out set written for this bench (none of it seen when the confidence
threshold was chosen), in nine languages.

    accuracy      right / all, for sentences of 5+ words (target >= 95%) and of 2-4 words
    wrong         a language named that is not the sentence's (the costly mistake: a voice
                  switched); "unsure" (None) is not wrong, the voice is kept
    time          microseconds a detection, median

Run: .venv/bin/python bench/languages.py. Prints a table, writes bench/results/languages.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voxserve.text.languages import detect_language, load_detector  # noqa: E402

SENTENCES: dict[str, list[str]] = {
    "en": [
        "Could you send me the report before lunch tomorrow?",
        "The garden looks lovely after all that rain.",
        "We missed the last bus and walked home together.",
        "My brother is learning to play the violin.",
        "Please turn the lights off when you leave the room.",
        "The museum is closed on Mondays and public holidays.",
        "She bought fresh bread at the market this morning.",
        "I think the meeting will run a little late.",
        "Our neighbours are painting their fence bright blue.",
        "The children built a sandcastle near the water.",
        "Thanks a lot.",
        "See you soon.",
        "Where is the station?",
    ],
    "de": [
        "Kannst du mir morgen früh beim Umzug helfen?",
        "Der Zug nach Hamburg hat heute zwanzig Minuten Verspätung.",
        "Wir haben am Wochenende einen langen Spaziergang gemacht.",
        "Meine Schwester arbeitet seit drei Jahren in einer Bäckerei.",
        "Bitte schließ das Fenster, bevor du schlafen gehst.",
        "Das Restaurant an der Ecke hat einen neuen Koch.",
        "Ich habe meinen Schlüssel schon wieder im Büro vergessen.",
        "Im Herbst fallen die Blätter von den Bäumen.",
        "Unser Hund schläft am liebsten auf dem Sofa.",
        "Die Kinder spielen nach der Schule im Park.",
        "Vielen herzlichen Dank.",
        "Bis morgen früh.",
        "Wo ist der Bahnhof?",
    ],
    "fr": [
        "Est-ce que tu peux m'appeler ce soir après le dîner?",
        "Le marché du samedi matin est toujours très animé.",
        "Nous avons visité un petit village au bord de la mer.",
        "Mon voisin répare sa vieille voiture tous les dimanches.",
        "Il faut acheter du lait et des œufs pour demain.",
        "La bibliothèque ferme plus tôt pendant les vacances.",
        "Elle a oublié son parapluie dans le métro hier.",
        "Les enfants regardent un dessin animé dans le salon.",
        "Je préfère le thé au café le matin.",
        "Le musée propose une nouvelle exposition de photographies.",
        "Merci beaucoup madame.",
        "À bientôt mes amis.",
        "Où est la gare?",
    ],
    "es": [
        "¿Puedes recogerme en el aeropuerto mañana por la tarde?",
        "La panadería de mi barrio abre muy temprano.",
        "Fuimos a la playa con mis primos el verano pasado.",
        "Mi abuela cocina la mejor paella de la familia.",
        "Necesitamos comprar más sillas para la fiesta del sábado.",
        "El tren llegó con media hora de retraso.",
        "Los estudiantes preparan un examen muy difícil.",
        "Me gusta leer novelas antes de dormir.",
        "Hace mucho calor en la ciudad durante agosto.",
        "Mi hermano trabaja en un hospital cerca de aquí.",
        "Muchas gracias señor.",
        "Hasta luego amigos.",
        "¿Dónde está la estación?",
    ],
    "it": [
        "Potresti chiamarmi quando arrivi alla stazione?",
        "La nonna prepara la pasta fresca ogni domenica.",
        "Abbiamo passato le vacanze in montagna quest'anno.",
        "Il negozio all'angolo vende frutta e verdura fresca.",
        "Mio fratello studia ingegneria all'università di Bologna.",
        "Domani mattina dobbiamo partire molto presto.",
        "I bambini giocano in giardino dopo la scuola.",
        "Ho dimenticato il telefono sul tavolo della cucina.",
        "Questa sera andiamo a cena da alcuni amici.",
        "Il museo è chiuso il lunedì per lavori.",
        "Grazie mille davvero.",
        "A domani ragazzi.",
        "Dov'è la stazione?",
    ],
    "pt": [
        "Você pode me ajudar a carregar essas caixas amanhã?",
        "A padaria da esquina faz o melhor pão da cidade.",
        "Nós passamos o fim de semana na casa dos meus avós.",
        "O ônibus para o centro sai a cada quinze minutos.",
        "Minha irmã está aprendendo a tocar violão.",
        "Precisamos comprar frutas e legumes para o jantar.",
        "As crianças brincam no parque depois da escola.",
        "Esqueci o guarda-chuva no escritório ontem à tarde.",
        "O restaurante novo tem uma vista muito bonita.",
        "Eles viajaram para o norte do país nas férias.",
        "Muito obrigado mesmo.",
        "Até amanhã pessoal.",
        "Onde fica a estação?",
    ],
    "nl": [
        "Kun je me morgen helpen met de verhuizing?",
        "De bakker op de hoek verkoopt heerlijk vers brood.",
        "We hebben het hele weekend in de tuin gewerkt.",
        "Mijn zus woont al drie jaar in Amsterdam.",
        "Vergeet niet de deur op slot te doen.",
        "De trein naar Utrecht heeft vandaag vertraging.",
        "De kinderen fietsen elke dag naar school.",
        "Ik drink 's ochtends altijd een kop koffie.",
        "Het museum is op maandag de hele dag gesloten.",
        "Onze buren hebben een nieuwe hond gekregen.",
        "Hartelijk dank allemaal.",
        "Tot morgen vrienden.",
        "Waar is het station?",
    ],
    "ja": [
        "明日の朝、駅で待ち合わせしましょう。",
        "この店のラーメンはとても美味しいです。",
        "週末は家族と一緒に公園へ行きました。",
        "新しい仕事は少し忙しいけれど楽しいです。",
        "雨が降りそうなので傘を持って行ってください。",
        "図書館で本を三冊借りました。",
        "兄は東京の会社で働いています。",
        "夏休みに海で泳ぐのが楽しみです。",
        "ありがとうございます。",
        "また明日。",
        "駅はどこですか。",
    ],
    "zh": [
        "明天早上我们在火车站见面吧。",
        "这家餐厅的饺子非常好吃。",
        "周末我和朋友一起去爬山了。",
        "我的妹妹正在学习弹钢琴。",
        "请你把窗户关上，外面太冷了。",
        "图书馆星期一不开门。",
        "他每天骑自行车去上班。",
        "我们下个月打算去北京旅游。",
        "谢谢你的帮助。",
        "明天见。",
        "车站在哪里？",
    ],
}
"""Sentences of 5+ words (for ja and zh, which write no spaces: 9+ characters) and, at the end
of each list, short ones of 2-4 words."""


def long_enough(sentence: str, language: str) -> bool:
    if language in ("ja", "zh"):
        return len(sentence) >= 9
    return len(sentence.split()) >= 5


def main() -> None:
    load_detector()
    rows: dict[str, dict[str, float]] = {}
    times: list[float] = []
    wrong_examples: list[str] = []
    for bucket in ("5+ words", "2-4 words"):
        right = wrong = total = 0
        for language, sentences in SENTENCES.items():
            for sentence in sentences:
                if long_enough(sentence, language) != (bucket == "5+ words"):
                    continue
                started = time.perf_counter()
                detected = detect_language(sentence)
                times.append(time.perf_counter() - started)
                total += 1
                right += detected == language
                if detected is not None and detected != language:
                    wrong += 1
                    wrong_examples.append(f"{sentence!r}: {detected}, not {language}")
        rows[bucket] = {
            "sentences": total,
            "accuracy": round(right / total, 3),
            "wrong": round(wrong / total, 3),
            "unsure": round((total - right - wrong) / total, 3),
        }
    results = {
        "languages": sorted(SENTENCES),
        **rows,
        "detect_us_median": round(1e6 * statistics.median(times), 1),
        "wrong_examples": wrong_examples,
    }
    print(f"{'measure':<40}{'value':>10}  target")
    for bucket, row in rows.items():
        target = ">= 95%" if bucket == "5+ words" else "report"
        label = f"accuracy, {bucket} ({row['sentences']})"
        print(f"{label:<40}{row['accuracy']:>10.1%}  {target}")
        print(f"{f'wrong language named, {bucket}':<40}{row['wrong']:>10.1%}")
        print(f"{f'unsure (voice kept), {bucket}':<40}{row['unsure']:>10.1%}")
    print(f"{'detection, median':<40}{results['detect_us_median']:>8} us")
    for example in wrong_examples:
        print("  wrong:", example)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "languages.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
